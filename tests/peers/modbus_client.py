"""An independent Modbus TCP client (pymodbus 3.9.x) for pointhub's tests.

  modbus_client.py read  --port P --table holding|input|coil --address A --count N
  modbus_client.py write --port P --table holding|coil --address A VALUE...

Prints one JSON object: {"ok": true, "values": [...]} or {"ok": false, "exception": CODE} or
{"ok": false, "error": "..."}.
"""

import argparse
import json
import sys

from pymodbus.client import ModbusTcpClient


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("op", choices=["read", "write"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--table", default="holding")
    ap.add_argument("--address", type=int, required=True)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("values", nargs="*", type=int)
    a = ap.parse_intermixed_args()
    c = ModbusTcpClient("127.0.0.1", port=a.port, timeout=10, retries=0)
    if not c.connect():
        print(json.dumps({"ok": False, "error": "cannot connect"}))
        return 1
    try:
        if a.op == "read":
            fn = {
                "holding": c.read_holding_registers,
                "input": c.read_input_registers,
                "coil": c.read_coils,
                "discrete": c.read_discrete_inputs,
            }[a.table]
            rr = fn(a.address, count=a.count, slave=1)
        elif a.table == "coil":
            rr = c.write_coils(a.address, [bool(v) for v in a.values], slave=1)
        elif len(a.values) == 1:
            rr = c.write_register(a.address, a.values[0], slave=1)
        else:
            rr = c.write_registers(a.address, a.values, slave=1)
    except Exception as e:  # a broken connection or a timeout
        print(json.dumps({"ok": False, "error": str(e)}))
        return 1
    finally:
        c.close()
    if rr.isError():
        print(json.dumps({"ok": False, "exception": getattr(rr, "exception_code", None)}))
        return 0
    if a.op == "read":
        vals = rr.registers if a.table in ("holding", "input") else [int(b) for b in rr.bits[: a.count]]
        print(json.dumps({"ok": True, "values": vals}))
    else:
        print(json.dumps({"ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
