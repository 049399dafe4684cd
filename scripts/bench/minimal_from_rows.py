#!/usr/bin/env python3
"""minimal_from_rows.py DATABASE_URL USER_UUID > scripts/bench/minimal-purchase.sql

Writes the purchase mix's pgbench "minimal" script from the rows one buyer's checkout and
payment left in a bench database (run the mix with a few events first, then pass one of its
buyers): every row, written once by a plain insert, one statement per event (the first event
writes every row but the other events' own), with the buyer's ids, e-mail, account number and
voucher code replaced by values of the run number :n. bench.sh runs it with triggers and
foreign-key checks off (session_replication_role = replica, set per connection): an upper
bound for any design that keeps these rows."""
import json
import re
import subprocess
import sys

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
STRIPE_ID = re.compile(r"(cus|pi|cs|evt|ch|pm|req)_[A-Za-z0-9]+")


def query(url, sql):
    out = subprocess.run(["psql", "-X", "-At", url, "-c", sql],
                         check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def main(url, user_id):
    rows = lambda table, where: query(url, f"select row_to_json(t) from {table} t where {where}")
    u = f"'{user_id}'::uuid"
    account = f"(select id from public.accounts where user_id = {u})"
    events = rows("public.stripe_webhook_events", f"user_id = {u}")
    event_ids = ", ".join(f"'{e['stripe_event_id']}'" for e in events)
    data = {t: rows(t, w) for t, w in [
        ("auth.users", f"id = {u}"),
        ("auth.identities", f"user_id = {u}"),
        ("public.users", f"id = {u}"),
        ("public.customers", f"id = {u}"),
        ("public.stripe_customers", f"user_id = {u}"),
        ("public.accounts", f"user_id = {u}"),
        ("public.payment_intents", f"customer_id = {u}"),
        ("public.charges", f"customer_id = {u}"),
        ("public.access_grants", f"account_id = {account}"),
        ("public.vouchers", f"grant_id in (select id from public.access_grants where account_id = {account})"),
        ("public.events", f"user_id = {u}"),
    ]}
    versions = rows("public.stripe_object_versions", f"stripe_event_id in ({event_ids})")
    generated = {(x["t"], x["c"]) for x in query(url, """
        select json_build_object('t', attrelid::regclass::text, 'c', attname) from pg_attribute
        where attgenerated <> '' or attidentity <> ''""")}

    # The values that must differ per run -> an expression of :n.
    subst = {}
    every_row = [r for rs in data.values() for r in rs] + events + versions
    for r in every_row:
        for c, v in r.items():
            if not isinstance(v, str) or not v or v in subst:
                continue
            k = len(subst) + 1
            if UUID.fullmatch(v):
                subst[v] = f"md5(:n::text || '{k}')::uuid::text"
            elif STRIPE_ID.fullmatch(v):
                subst[v] = f"'{v.split('_')[0]}_pgb{k}_' || :n::text"
            elif c in ("email", "receipt_email"):
                subst[v] = "'buyer.pgb.' || :n::text || '@example.com'"
            elif c == "account_number":
                subst[v] = "lpad((:n::bigint % 10000000000000000)::text, 16, '0')"
            elif c == "code":
                subst[v] = "upper(substr(md5(:n::text || 'code'), 1, 16))"
    pattern = re.compile("|".join(re.escape(s) for s in sorted(subst, key=len, reverse=True)))

    def quote(text):
        # pgbench reads ":name" as a variable even inside a string literal.
        return "'" + re.sub(r":(?=\w)", "' || ':' || '", text.replace("'", "''")) + "'"

    def literal(v, is_json):
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list) and not is_json:
            v = "{" + ",".join('"' + str(x).replace('"', '\\"') + '"' for x in v) + "}"
        text = json.dumps(v) if isinstance(v, (dict, list)) else str(v)
        parts, pos = [], 0
        for m in pattern.finditer(text):
            parts += [quote(text[pos:m.start()]), f"({subst[m.group(0)]})"]
            pos = m.end()
        parts.append(quote(text[pos:]))
        return " || ".join(p for p in parts if p != "''") or "''"

    column_types = {}

    def insert(table, row, alias):
        if table not in column_types:
            column_types[table] = {x["c"]: x["t"] for x in query(url, f"""
                select json_build_object('c', attname, 't', format_type(atttypid, atttypmod))
                from pg_attribute where attrelid = '{table}'::regclass and attnum > 0
                and not attisdropped""")}
        types = column_types[table]
        short = table.removeprefix("public.")
        cols = [c for c in row if c in types and (short, c) not in generated and (table, c) not in generated]
        vals = [f"({literal(row[c], types[c] in ('json', 'jsonb'))})::{types[c]}" for c in cols]
        return f"{alias} as (insert into {table} ({', '.join(cols)}) values ({', '.join(vals)}))"

    events.sort(key=lambda e: (not e["event_type"].startswith("checkout"), e["created_at"]))
    print("-- pgbench minimal transaction, purchase mix, written by scripts/bench/minimal_from_rows.py")
    print("-- from the rows one buyer's events left: " + ", ".join(e["event_type"] for e in events) + ".")
    print("-- Each row written once by a plain insert, one statement per event, triggers and")
    print("-- foreign-key checks off: an upper bound for any design that keeps these rows.")
    print(f"-- events per run: {len(events)}")
    print("-- pgbench: PGOPTIONS=-csession_replication_role=replica")
    print("\\set n random(1, 1000000000000000)")
    for i, e in enumerate(events):
        parts = [insert("public.stripe_webhook_events", e, "ev")]
        own = [v for v in versions if v["stripe_event_id"] == e["stripe_event_id"]]
        parts += [insert("public.stripe_object_versions", v, f"ver{j}") for j, v in enumerate(own)]
        if i == 0:
            for table, rs in data.items():
                parts += [insert(table, r, f"{table.replace('.', '_')}{j}") for j, r in enumerate(rs)]
        print(f"-- {e['event_type']}")
        print("with " + ",\n".join(parts) + "\nselect 1;")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
