"""Logs in to the console's API as a user limited to some namespaces and nodes and checks it
sees only those: points, nodes, audit entries, and no Keys page.

  restricted_check.py --base URL --user U --password P --allowed PREFIX --node NAME
"""

import argparse
import http.cookiejar
import json
import ssl
import sys
import urllib.parse
import urllib.request


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--allowed", required=True)
    ap.add_argument("--node", required=True)
    a = ap.parse_args()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    jar = http.cookiejar.CookieJar()
    op = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx), urllib.request.HTTPCookieProcessor(jar))
    op.open(a.base + "/login", data=urllib.parse.urlencode({"name": a.user, "password": a.password}).encode(), timeout=10)
    assert any(c.name == "ph_session" for c in jar), "no session cookie"

    def get(path):
        try:
            with op.open(a.base + path, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, points = get("/api/v1/points")
    assert status == 200, status
    names = [p["point"] for p in points]
    assert names and all(n.startswith(a.allowed) for n in names), names
    status, nodes = get("/api/v1/nodes")
    assert [n["name"] for n in nodes] == [a.node], nodes
    status, audit = get("/api/v1/audit")
    assert all(e.get("name") == a.node for e in audit), audit
    status, body = get("/api/v1/keys")
    assert status == 403, (status, body)
    print(f"restricted user sees {len(names)} points under {a.allowed}, nodes {[n['name'] for n in nodes]}, {len(audit)} audit entries, no keys")
    return 0


if __name__ == "__main__":
    sys.exit(main())
