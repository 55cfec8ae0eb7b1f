// The g++ workload of bench/peers.sh: a translation unit that is heavy on templates and standard
// containers, compiled with `g++ -O2 -c`. It is never run; it only has to compile cleanly.
// COPIES (default 1) instantiates the generic part that many times over distinct types.
#include <algorithm>
#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <unordered_map>
#include <variant>
#include <vector>

#ifndef COPIES
#define COPIES 1
#endif

namespace inv {

template <int Tag>
struct Item {
    std::string sku;
    std::string name;
    std::vector<std::string> tags;
    double price = 0;
    int qty = 0;
    std::optional<std::string> note;
    bool operator<(const Item &o) const { return std::tie(sku, name, price) < std::tie(o.sku, o.name, o.price); }
};

template <int Tag>
using Value = std::variant<std::monostate, int64_t, double, std::string, std::vector<Item<Tag>>>;

template <int Tag>
struct Store {
    std::map<std::string, Item<Tag>> by_sku;
    std::unordered_map<std::string, std::vector<std::string>> by_tag;
    std::multimap<double, std::string> by_price;
    std::deque<std::function<void(Store &)>> pending;
    std::unordered_map<std::string, Value<Tag>> attrs;

    void add(Item<Tag> it) {
        for (const auto &t : it.tags)
            by_tag[t].push_back(it.sku);
        by_price.emplace(it.price, it.sku);
        by_sku.insert_or_assign(it.sku, std::move(it));
    }

    template <typename Pred>
    std::vector<Item<Tag>> select(Pred &&p) const {
        std::vector<Item<Tag>> out;
        for (const auto &[k, v] : by_sku)
            if (p(v))
                out.push_back(v);
        std::sort(out.begin(), out.end(), [](const auto &a, const auto &b) { return a.price > b.price; });
        return out;
    }

    std::map<std::string, double> revenue_by_tag() const {
        std::map<std::string, double> r;
        for (const auto &[tag, skus] : by_tag)
            r[tag] = std::accumulate(skus.begin(), skus.end(), 0.0, [this](double s, const std::string &k) {
                auto it = by_sku.find(k);
                return it == by_sku.end() ? s : s + it->second.price * it->second.qty;
            });
        return r;
    }

    void run_pending() {
        while (!pending.empty()) {
            auto f = std::move(pending.front());
            pending.pop_front();
            f(*this);
        }
    }
};

// A small graph with Dijkstra over std containers, instantiated per tag as well.
template <int Tag, typename W = double>
struct Graph {
    std::unordered_map<int, std::vector<std::pair<int, W>>> adj;
    void edge(int a, int b, W w) {
        adj[a].emplace_back(b, w);
        adj[b].emplace_back(a, w);
    }
    std::unordered_map<int, W> dijkstra(int src) const {
        std::unordered_map<int, W> dist;
        std::set<std::pair<W, int>> q;
        dist[src] = 0;
        q.emplace(0, src);
        while (!q.empty()) {
            auto [d, u] = *q.begin();
            q.erase(q.begin());
            auto it = adj.find(u);
            if (it == adj.end())
                continue;
            for (auto [v, w] : it->second) {
                auto dv = dist.find(v);
                if (dv == dist.end() || d + w < dv->second) {
                    if (dv != dist.end())
                        q.erase({dv->second, v});
                    dist[v] = d + w;
                    q.emplace(d + w, v);
                }
            }
        }
        return dist;
    }
};

template <int Tag>
std::string exercise() {
    Store<Tag> s;
    for (int i = 0; i < 50; i++) {
        Item<Tag> it;
        it.sku = "S" + std::to_string(i * 7919 % 1000);
        it.name = "item-" + std::to_string(i);
        it.tags = {"t" + std::to_string(i % 5), "u" + std::to_string(i % 3)};
        it.price = i * 1.25;
        it.qty = i % 4;
        if (i % 3 == 0)
            it.note = "restock";
        s.add(std::move(it));
    }
    s.attrs["count"] = int64_t(s.by_sku.size());
    s.attrs["items"] = s.select([](const Item<Tag> &i) { return i.qty > 1; });
    s.pending.push_back([](Store<Tag> &st) { st.attrs["late"] = std::string("yes"); });
    s.run_pending();
    Graph<Tag> g;
    for (int i = 0; i < 40; i++)
        g.edge(i, (i * 13 + 7) % 40, 1.0 + i % 5);
    auto d = g.dijkstra(0);
    std::ostringstream os;
    for (const auto &[tag, r] : s.revenue_by_tag())
        os << tag << '=' << r << ';';
    os << std::get<int64_t>(s.attrs["count"]) << d.size();
    return os.str();
}

template <int... Is>
std::vector<std::string> exercise_all(std::integer_sequence<int, Is...>) {
    return {exercise<Is>()...};
}

} // namespace inv

std::vector<std::string> compile_me_entry() {
    return inv::exercise_all(std::make_integer_sequence<int, COPIES>{});
}
