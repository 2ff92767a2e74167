#!/usr/bin/env python3
"""A device's OPC UA server, made with asyncua (an independent implementation), for the tests.

usage: opcua_device.py PORT [--secure DIR]

Serves on opc.tcp://127.0.0.1:PORT/ under namespace 2 (string node ids, folder Dev):
  Bool, I16, I32, I64, U16, U32, U64, F32, F64, Str  one variable per type, all writable
  Counter   UInt32, +1 every 100 ms, with its source time
  Broken    Double, status BadSensorFailure
  Doubtful  Double 7.5, status UncertainSensorNotAccurate
Without --secure: security None, anonymous. With --secure DIR: only Basic256Sha256
SignAndEncrypt, user "edge" with password "secret" (anyone else is refused), the server's
certificate kept in DIR (the same one across restarts). Prints "READY PORT" once serving.
"""
import asyncio
import sys
from datetime import datetime, timezone
from pathlib import Path

from asyncua import Server, ua

VT = ua.VariantType
VARS = [
    ("Bool", True, VT.Boolean), ("I16", -16, VT.Int16), ("I32", -32, VT.Int32),
    ("I64", -64, VT.Int64), ("U16", 16, VT.UInt16), ("U32", 32, VT.UInt32),
    ("U64", 64, VT.UInt64), ("F32", 1.5, VT.Float), ("F64", 2.25, VT.Double),
    ("Str", "hello", VT.String), ("Counter", 0, VT.UInt32), ("Broken", 0.0, VT.Double),
    ("Doubtful", 7.5, VT.Double),
]
APP_URI = "urn:pointhub-tests:opcua-device"


class Users:
    """Only edge/secret (asyncua asks for anonymous tokens too: refused)."""

    def get_user(self, iserver, username=None, password=None, certificate=None):
        from asyncua.crypto.permission_rules import User, UserRole
        if (username, password) == ("edge", "secret"):
            return User(role=UserRole.User, name=username)
        return None


def now():
    return datetime.now(timezone.utc)


async def main() -> None:
    port = int(sys.argv[1])
    secure = Path(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--secure" else None
    server = Server(user_manager=Users()) if secure else Server()
    await server.init()
    await server.set_application_uri(APP_URI)
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    if secure:
        from cryptography.x509.oid import ExtendedKeyUsageOID
        from asyncua.crypto.cert_gen import setup_self_signed_certificate
        secure.mkdir(parents=True, exist_ok=True)
        key, cert = secure / "server_key.pem", secure / "server_cert.der"
        await setup_self_signed_certificate(
            key, cert, APP_URI, "127.0.0.1",
            [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
            {"commonName": "opcua-device"})
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        server.set_identity_tokens([ua.UserNameIdentityToken])
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace("urn:pointhub-tests:device")
    dev = await server.nodes.objects.add_object(f"ns={idx};s=Dev", "Dev")
    nodes = {}
    for name, val, vt in VARS:
        nodes[name] = await dev.add_variable(f"ns={idx};s={name}", name, val, vt)
        await nodes[name].set_writable()
    await nodes["Broken"].write_value(ua.DataValue(
        ua.Variant(0.0, VT.Double), ua.StatusCode(ua.StatusCodes.BadSensorFailure),
        SourceTimestamp=now()))
    await nodes["Doubtful"].write_value(ua.DataValue(
        ua.Variant(7.5, VT.Double), ua.StatusCode(ua.StatusCodes.UncertainSensorNotAccurate),
        SourceTimestamp=now()))
    async with server:
        print(f"READY {port}", flush=True)
        n = 0
        while True:
            await asyncio.sleep(0.1)
            n += 1
            await nodes["Counter"].write_value(ua.DataValue(
                ua.Variant(n, VT.UInt32), SourceTimestamp=now()))


if __name__ == "__main__":
    asyncio.run(main())
