"""A real Modbus TCP device for pointhub's tests and benchmarks (pymodbus 3.9.x).

Holding 0-1: f32 123.456 (ABCD); holding 10: 42; coil 0: on; input 0: a counter that steps every
100 ms; holding 1000..1000+churn-1: values that all change every second (for benchmarks).
Addresses past --size answer with an IllegalAddress exception.
"""

import argparse
import asyncio
import random
import struct

from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext
from pymodbus.server import StartAsyncTcpServer


class StrictBlock(ModbusSequentialDataBlock):
    """Answers reads outside the block with exception 0x02, as a real device does."""

    def getValues(self, address, count=1):
        if address < self.address or address + count > self.address + len(self.values):
            return 2
        return super().getValues(address, count)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--serial", help="serve Modbus RTU on this serial device instead of TCP")
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--churn", type=int, default=0)
    a = ap.parse_args()

    def block():
        # The classic datastore is 1-based: protocol address 0 is block address 1.
        return StrictBlock(0, [0] * (a.size + 1))

    dev = ModbusSlaveContext(di=block(), co=block(), hr=block(), ir=block())
    ctx = ModbusServerContext(slaves=dev, single=True)
    hi, lo = struct.unpack(">HH", struct.pack(">f", 123.456))
    dev.setValues(3, 0, [hi, lo])
    dev.setValues(3, 10, [42])
    dev.setValues(1, 0, [True])

    async def counter():
        i = 0
        while True:
            i = (i + 1) & 0xFFFF
            dev.setValues(4, 0, [i])
            await asyncio.sleep(0.1)

    async def churn():
        while True:
            dev.setValues(3, 1000, [random.randrange(65536) for _ in range(a.churn)])
            await asyncio.sleep(1.0)

    async def run():
        tasks = [asyncio.create_task(counter())]
        if a.churn:
            tasks.append(asyncio.create_task(churn()))
        if a.serial:
            from pymodbus import FramerType
            from pymodbus.server import StartAsyncSerialServer

            print(f"modbus RTU simulator on {a.serial}", flush=True)
            await StartAsyncSerialServer(context=ctx, port=a.serial, baudrate=19200, framer=FramerType.RTU)
        else:
            print(f"modbus simulator on 127.0.0.1:{a.port}", flush=True)
            await StartAsyncTcpServer(context=ctx, address=("127.0.0.1", a.port))

    asyncio.run(run())


if __name__ == "__main__":
    main()
