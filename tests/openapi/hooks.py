"""Schemathesis hooks for wxlogin: every generated request that needs a
session gets a fresh one, from a real login with a code minted by the WeChat
simulator (a different WeChat user each time, so that no case inherits
another's state: a logout, a replaced session_key, a spent budget)."""

import json
import os
import secrets
import urllib.request

import schemathesis

GATEWAY = os.environ["WXLOGIN_FUZZ_GATEWAY"]
SIMULATOR = os.environ["WXLOGIN_FUZZ_SIMULATOR"]


def _post(url, body):
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


@schemathesis.auth(refresh_interval=None).apply_to(path_regex="^/v1/(me|verify|logout)")
class Session:
    def get(self, case, context):
        openid = "o_fuzz_" + secrets.token_hex(8)
        code = _post(f"{SIMULATOR}/sim/codes", {"openid": openid})["code"]
        return _post(f"{GATEWAY}/v1/login", {"code": code})["token"]

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
