"""An independent check of the hub's JSON WebSocket API, REST API and metrics.

  api_check.py --base https://127.0.0.1:PORT --token phk_... --schemas DIR --write POINT=VALUE

Uses the `websockets` and `jsonschema` packages (not pointhub's code): every message the hub
sends on /api/v1/ws must match schemas/json/ws-server.schema.json; every GET of the REST API must
match its response schema in /api/v1/openapi.json; /metrics must parse as OpenMetrics text.
Prints one line per check and exits non-zero on the first failure.
"""

import argparse
import asyncio
import json
import ssl
import sys
import urllib.request

import jsonschema
import websockets
from prometheus_client.openmetrics.parser import text_string_to_metric_families


def ctx():
    # The test hub has its own self-signed certificate; the TLS is still real.
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


def get(base, path, token):
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=ctx(), timeout=10) as r:
            return r.status, r.headers.get("content-type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read().decode()


async def ws_check(base, token, schema, write):
    url = base.replace("https://", "wss://") + "/api/v1/ws?token=" + token
    seen = {}
    async with websockets.connect(url, ssl=ctx()) as ws:
        await ws.send(json.dumps({"op": "subscribe", "patterns": ["**"]}))
        point, value = write.split("=", 1)
        wrote = False
        deadline = asyncio.get_event_loop().time() + 15
        while asyncio.get_event_loop().time() < deadline:
            msg = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
            jsonschema.validate(msg, schema)
            seen[msg["type"]] = seen.get(msg["type"], 0) + 1
            if msg["type"] == "snapshot_done" and not wrote:
                await ws.send(json.dumps({"op": "write", "id": 7, "point": point, "value": json.loads(value)}))
                await ws.send(json.dumps({"op": "nonsense"}))
                wrote = True
            if msg["type"] == "write_result":
                assert msg["id"] == 7 and msg["status"] == "Good", msg
            if all(k in seen for k in ("hello", "updates", "snapshot_done", "write_result", "error")) and seen["updates"] >= 3:
                break
    missing = [k for k in ("hello", "updates", "snapshot_done", "write_result", "error") if k not in seen]
    assert not missing, f"never got {missing}: {seen}"
    print(f"ws: {sum(seen.values())} messages, all valid against the schema: {seen}")


def rest_check(base, token):
    status, _, text = get(base, "/api/v1/openapi.json", token)
    doc = json.loads(text)
    checked = 0
    for path, ops in doc["paths"].items():
        if "get" not in ops or "{" in path or path in ("/api/v1/ws", "/metrics"):
            continue
        status, ctype, body = get(base, path, token)
        assert str(status) in ops["get"]["responses"], f"GET {path} -> {status}, not in the document"
        spec = ops["get"]["responses"][str(status)]
        schema = spec["content"]["application/json"]["schema"]
        jsonschema.validate(json.loads(body), schema)
        checked += 1
        print(f"rest: GET {path} -> {status}, matches the OpenAPI document")
    status, _, body = get(base, "/api/v1/keys", "wrong")
    assert status == 401, f"a wrong token got {status}"
    jsonschema.validate(json.loads(body), doc["paths"]["/api/v1/keys"]["get"]["responses"]["401"]["content"]["application/json"]["schema"])
    print("rest: a wrong token gets 401 with the documented error body")
    assert checked >= 4, checked


def metrics_check(base, token):
    status, ctype, text = get(base, "/metrics", token)
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("pointhub_sessions", "pointhub_points", "pointhub_updates_in", "pointhub_updates_out", "pointhub_conflated", "pointhub_connections_refused", "pointhub_writes"):
        assert name in fams, f"{name} missing from /metrics: {sorted(fams)}"
    edges = [s.value for s in fams["pointhub_sessions"].samples if s.labels.get("role") == "edge"]
    assert edges and edges[0] >= 1, edges
    print(f"metrics: {len(fams)} families parsed; edge sessions {edges[0]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--schemas", required=True)
    ap.add_argument("--write", required=True)
    a = ap.parse_args()
    schema = json.load(open(a.schemas + "/ws-server.schema.json"))
    asyncio.run(ws_check(a.base, a.token, schema, a.write))
    rest_check(a.base, a.token)
    metrics_check(a.base, a.token)
    print("all API checks passed")


if __name__ == "__main__":
    sys.exit(main())
