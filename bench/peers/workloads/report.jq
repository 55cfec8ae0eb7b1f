# The jq workload of bench/peers.sh: parse a big array, build, group, sort and reshape it.
map(select(.active))
| map(. + {total: ([.orders[] | .qty * .price] | add // 0),
           words: (.bio | split(" ") | length),
           key: ((.tags | join("+")) + "@" + .city)})
| group_by(.city)
| map({city: .[0].city,
       users: length,
       revenue: (map(.total) | add),
       top: (sort_by(-.total) | .[:5] | map({name, total})),
       tags: ([.[].tags[]] | group_by(.) | map({tag: .[0], n: length}) | sort_by(-.n) | .[:3]),
       longest_bio: (max_by(.words) | .name)})
| sort_by(-.revenue)
