"""An independent Sparkplug B host for pointhub's tests: paho-mqtt for MQTT, and the Sparkplug B
payload module that the PyPI package `pysparkplug` ships for the protobuf messages.

It subscribes to spBv1.0/<group>/#, decodes every message and prints one JSON line per message:
{"type": "DBIRTH", "node": ..., "device": ..., "seq": ..., "metrics": [{"name", "datatype",
"value", "quality", "quality_code"}]}. Lines on stdin are commands:
  DCMD <node> <device> <metric> <json value>   write a metric (its datatype from the births seen)
  REBIRTH <node>                                ask the node for a rebirth (NCMD)
"""

import argparse
import json
import ssl
import sys
import threading
import time

import paho.mqtt.client as mqtt
from pysparkplug._protobuf import sparkplug_b_pb2 as pb

BOOLEAN, STRING, DOUBLE, FLOAT = 11, 12, 10, 9


def value_of(m):
    kind = m.WhichOneof("value")
    if kind is None:
        return None
    v = getattr(m, kind)
    if kind == "long_value" and m.datatype in (1, 2, 3, 4) and v >= 1 << 63:
        v -= 1 << 64
    return v


def props(m):
    out = {}
    for k, v in zip(m.properties.keys, m.properties.values):
        kind = v.WhichOneof("value")
        out[k] = getattr(v, kind) if kind else None
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    a = ap.parse_args()
    types = {}  # (node, device, metric) -> datatype
    lock = threading.Lock()

    def out(obj):
        with lock:
            print(json.dumps(obj), flush=True)

    def on_connect(client, userdata, flags, rc):
        client.subscribe(f"spBv1.0/{a.group}/#", qos=1)
        out({"type": "CONNECTED", "rc": rc})

    def on_message(client, userdata, msg):
        parts = msg.topic.split("/")
        if len(parts) < 4:
            return
        kind, node = parts[2], parts[3]
        device = parts[4] if len(parts) > 4 else None
        p = pb.Payload()
        p.ParseFromString(msg.payload)
        metrics = []
        for m in p.metrics:
            pr = props(m)
            if kind.endswith("BIRTH"):
                types[(node, device, m.name)] = m.datatype
            metrics.append(
                {
                    "name": m.name,
                    "datatype": m.datatype,
                    "value": value_of(m),
                    "is_null": m.is_null,
                    "quality": pr.get("Quality"),
                    "quality_code": pr.get("pointhub/quality_code"),
                    "timestamp": m.timestamp,
                }
            )
        out(
            {
                "type": kind,
                "node": node,
                "device": device,
                "seq": p.seq if p.HasField("seq") else None,
                "metrics": metrics,
            }
        )

    c = mqtt.Client(client_id=f"sparkplug-host-{time.time_ns()}")
    c.tls_set(ca_certs=a.ca, certfile=a.cert, keyfile=a.key, cert_reqs=ssl.CERT_REQUIRED)
    c.on_connect = on_connect
    c.on_message = on_message
    c.connect("127.0.0.1", a.port, keepalive=5)
    c.loop_start()
    for line in sys.stdin:
        words = line.split(maxsplit=4)
        if not words:
            continue
        p = pb.Payload()
        p.timestamp = int(time.time() * 1000)
        if words[0] == "DCMD" and len(words) == 5:
            node, device, name, raw = words[1], words[2], words[3], json.loads(words[4])
            m = p.metrics.add()
            m.name = name
            dt = types.get((node, device, name), DOUBLE)
            m.datatype = dt
            if dt == BOOLEAN:
                m.boolean_value = bool(raw)
            elif dt == STRING:
                m.string_value = str(raw)
            elif dt in (DOUBLE,):
                m.double_value = float(raw)
            elif dt == FLOAT:
                m.float_value = float(raw)
            else:
                m.long_value = int(raw) & ((1 << 64) - 1)
            c.publish(f"spBv1.0/{a.group}/DCMD/{node}/{device}", p.SerializeToString(), qos=1)
        elif words[0] == "REBIRTH" and len(words) == 2:
            m = p.metrics.add()
            m.name = "Node Control/Rebirth"
            m.datatype = BOOLEAN
            m.boolean_value = True
            c.publish(f"spBv1.0/{a.group}/NCMD/{words[1]}", p.SerializeToString(), qos=1)
        out({"type": "SENT", "command": words[0]})


if __name__ == "__main__":
    main()
