# A real interpreter's allocation pattern: build big dicts of strings, tuples and small dicts,
# look them up, and drop them, over and over. Run as: python3 dicts.py [rounds]
import sys

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
total = 0
for r in range(rounds):
    d = {}
    for i in range(60000):
        key = "k%d-%d" % (r, i)
        d[key] = {"id": i, "name": key.upper(), "tags": [key[:3], str(i % 97)], "pos": (i, -i)}
    for i in range(0, 60000, 3):
        total += d["k%d-%d" % (r, i)]["id"]
    inverted = {v["name"]: k for k, v in d.items()}
    total += len(inverted)
    del d, inverted
print("dicts:", total)
