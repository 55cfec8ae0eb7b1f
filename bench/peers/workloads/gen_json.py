# Writes a JSON array of N records (users with nested orders, tags and free text) to stdout, for
# the jq workload of bench/peers.sh. Deterministic. Run as: python3 gen_json.py [records]
import json
import random
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 60000
rnd = random.Random(7)
words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
         "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon"]
cities = ["Lyon", "Porto", "Gent", "Graz", "Brno", "Turku", "Split", "Cork", "Bergen", "Pécs"]
out = sys.stdout
out.write("[\n")
for i in range(n):
    rec = {
        "id": i,
        "name": " ".join(rnd.choice(words).capitalize() for _ in range(rnd.randint(2, 3))),
        "city": rnd.choice(cities),
        "score": round(rnd.random() * 100, 3),
        "active": rnd.random() < 0.7,
        "tags": sorted(set(rnd.choice(words) for _ in range(rnd.randint(0, 5)))),
        "orders": [{"sku": "S%05d" % rnd.randint(0, 99999), "qty": rnd.randint(1, 9),
                    "price": round(rnd.random() * 200, 2)} for _ in range(rnd.randint(0, 6))],
        "bio": " ".join(rnd.choice(words) for _ in range(rnd.randint(5, 40))),
    }
    out.write(json.dumps(rec, ensure_ascii=False))
    out.write(",\n" if i + 1 < n else "\n")
out.write("]\n")
