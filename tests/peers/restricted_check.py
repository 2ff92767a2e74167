"""Logs in to the console's API as a user limited to some namespaces and nodes and checks it
sees only those: points, nodes, audit entries, and no Keys page.

  restricted_check.py --base URL --user U --password P --allowed PREFIX --node NAME
"""

import argparse
import asyncio
import http.cookiejar
import json
import ssl
import sys
import urllib.parse
import urllib.request

import websockets


async def ws_points(url, cookie):
    """Subscribes to everything over the JSON WebSocket; the points it shows in 2 s."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    seen = set()
    async with websockets.connect(url, ssl=ctx, extra_headers={"Cookie": cookie}) as ws:
        await ws.send(json.dumps({"op": "subscribe", "patterns": ["**"]}))
        loop = asyncio.get_running_loop()
        end = loop.time() + 2.0
        while loop.time() < end:
            try:
                m = json.loads(await asyncio.wait_for(ws.recv(), timeout=max(0.01, end - loop.time())))
            except asyncio.TimeoutError:
                break
            for u in m.get("updates", []):
                seen.add(u["point"])
    return seen


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--allowed", required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--ws", action="store_true", help="also check the JSON WebSocket's live view")
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
    # The node's own status points ($sys/<node>/…) are the node's too.
    mine = lambda n: n.startswith(a.allowed) or n.startswith(f"$sys/{a.node}/")
    assert names and all(mine(n) for n in names), names
    status, nodes = get("/api/v1/nodes")
    assert [n["name"] for n in nodes] == [a.node], nodes
    status, audit = get("/api/v1/audit")
    assert all(e.get("name") == a.node for e in audit), audit
    status, body = get("/api/v1/keys")
    assert status == 403, (status, body)
    if a.ws:
        cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
        seen = asyncio.run(ws_points(a.base.replace("https://", "wss://") + "/api/v1/ws", cookie))
        assert seen and all(mine(n) for n in seen), sorted(seen)
        print(f"its WebSocket shows {len(seen)} points, all under {a.allowed}")
    print(f"restricted user sees {len(names)} points under {a.allowed}, nodes {[n['name'] for n in nodes]}, {len(audit)} audit entries, no keys")
    return 0


if __name__ == "__main__":
    sys.exit(main())
