# Writes an SQL script for sqlite3 to stdout: a table filled in one transaction, an index,
# aggregate queries, updates with string building, and deletes. Run as: python3 gen_sql.py [rows]
import random
import sys

rows = int(sys.argv[1]) if len(sys.argv) > 1 else 30000
rnd = random.Random(42)
words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
out = sys.stdout
out.write("PRAGMA journal_mode=OFF;\nPRAGMA synchronous=OFF;\n")
out.write("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, score REAL, note TEXT);\n")
out.write("BEGIN;\n")
for i in range(rows):
    name = "-".join(rnd.choice(words) for _ in range(rnd.randint(1, 4)))
    note = "x" * rnd.randint(0, 200)
    out.write("INSERT INTO t VALUES(%d,'%s',%d,%f,'%s');\n"
              % (i, name, rnd.randint(0, 999), rnd.random() * 100, note))
out.write("COMMIT;\n")
out.write("CREATE INDEX t_name ON t(name);\nCREATE INDEX t_grp ON t(grp, score);\n")
out.write("SELECT grp, count(*), avg(score), group_concat(substr(name, 1, 3)) FROM t GROUP BY grp "
          "ORDER BY 2 DESC LIMIT 5;\n")
out.write("SELECT name, count(*) FROM t GROUP BY name ORDER BY count(*) DESC LIMIT 5;\n")
out.write("UPDATE t SET note = note || name || printf('%08d', id) WHERE grp % 3 = 0;\n")
out.write("SELECT count(*), sum(length(note)) FROM t WHERE note LIKE '%gamma%';\n")
out.write("DELETE FROM t WHERE score < 50;\n")
out.write("SELECT count(*) FROM t;\n")
