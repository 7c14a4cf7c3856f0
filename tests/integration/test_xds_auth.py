"""remora-xds's API authentication (--credentials-file): AWS Signature Version 4, checked the
way AWS checks it. Driven by the real AWS CLI (what App Mesh users run: the right key works for
reads, writes with bodies and queries, and a second profile's key too; a wrong secret, an
unknown key, no signature and another region get AWS's exceptions in the CLI's words, and
nothing is written), and by a second SigV4 implementation here (sign_v4, Python's hmac and
hashlib) for what the CLI will not send: a stale date, a body changed after signing, an
unsigned /debug/xds. Without the flag the API stays open, with a warning at startup."""

import datetime
import hashlib
import hmac
import json
import os
import subprocess
import urllib.parse

from lib import HttpConn, wait_for
from test_xds_api import VN_SPEC, aws, aws_error

K1 = ("AKIDREMORATEST1", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
K2 = ("AKIDREMORATEST2", "second/secret+key=")
MISMATCH = ("The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.")


def creds_file(ctx, mode=0o600, text=None):
    p = ctx.tmp / "credentials"
    p.write_text(text if text is not None else
                 f"[default]\naws_access_key_id = {K1[0]}\naws_secret_access_key = {K1[1]}\n\n"
                 f"[ci]\naws_access_key_id={K2[0]}\naws_secret_access_key={K2[1]}\n"
                 "aws_session_token = ignored\n")
    os.chmod(p, mode)
    return p


def start(ctx, extra=()):
    x = ctx.start_xds(extra_args=["--credentials-file", str(creds_file(ctx)), *extra])
    wait_for(lambda: "the API requires SigV4" in x.stderr, 5, "the startup log")
    return x


def sign_v4(method, path, query, headers, body, key, region="us-west-2", when=None):
    """Adds X-Amz-Date and Authorization to ``headers`` (a dict, Host included) for a request
    of ``path`` (as sent: percent-encoded) and ``query`` (as sent); AWS's algorithm, written
    from its documentation."""
    when = when or datetime.datetime.now(datetime.timezone.utc)
    amz = when.strftime("%Y%m%dT%H%M%SZ")
    headers["X-Amz-Date"] = amz
    names = sorted(k.lower() for k in headers)
    canon_headers = "".join(f"{n}:{' '.join(str(headers[k]).split())}\n"
                            for n in names for k in headers if k.lower() == n)
    pairs = sorted((urllib.parse.quote(urllib.parse.unquote(k), safe="-_.~"),
                    urllib.parse.quote(urllib.parse.unquote(v), safe="-_.~"))
                   for k, _, v in (p.partition("=") for p in query.split("&") if p))
    creq = "\n".join([method, urllib.parse.quote(path, safe="/~"),
                      "&".join(f"{k}={v}" for k, v in pairs), canon_headers, ";".join(names),
                      hashlib.sha256(body).hexdigest()])
    scope = f"{amz[:8]}/{region}/appmesh/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(creq.encode()).hexdigest()])
    k = ("AWS4" + key[1]).encode()
    for part in (amz[:8], region, "appmesh", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={key[0]}/{scope}, "
                                f"SignedHeaders={';'.join(names)}, Signature={sig}")
    return headers


def signed(x, method, target, body=b"", key=K1, send_body=None, **kw):
    """One request signed by sign_v4 (``send_body``: what is sent instead of the signed body)."""
    path, _, query = target.partition("?")
    hs = {"Host": f"127.0.0.1:{x.port}"}
    if body:
        hs["Content-Type"] = "application/json"
    sign_v4(method, path, query, hs, body, key, **kw)
    with HttpConn(x.port) as c:
        return c.request(method, target, hs, send_body if send_body is not None else
                         (body if body or method != "GET" else None))


def error_of(r):
    return r.status, r.header("x-amzn-errortype"), json.loads(r.body)["message"]


def test_sigv4_with_the_aws_cli(ctx):
    """The CLI with a key of the file creates, reads, pages, tags (ARNs in the query) and
    deletes; the second profile's key works too. A wrong secret, an unknown key, an unsigned
    request and another region are refused with AWS's exceptions, and write nothing."""
    x = start(ctx)
    m = aws(ctx, x, "create-mesh", "--mesh-name", "shop", creds=K1)["mesh"]
    assert m["meshName"] == "shop"
    aws(ctx, x, "create-mesh", "--mesh-name", "shop-2", creds=K2)
    vn = aws(ctx, x, "create-virtual-node", "--mesh-name", "shop", "--virtual-node-name",
             "cart v1", "--spec", VN_SPEC, creds=K1)["virtualNode"]
    assert vn["virtualNodeName"] == "cart v1"  # a space: %20 in the path, signed as %2520
    page = aws(ctx, x, "list-meshes", "--limit", "1", "--no-paginate", creds=K2)
    assert len(page["meshes"]) == 1 and page.get("nextToken"), page
    arn = m["metadata"]["arn"]
    aws(ctx, x, "tag-resource", "--resource-arn", arn, "--tags", "key=team,value=a b/c+d",
        creds=K1)
    tags = aws(ctx, x, "list-tags-for-resource", "--resource-arn", arn, creds=K2)["tags"]
    assert tags == [{"key": "team", "value": "a b/c+d"}], tags

    wrong = (K1[0], K1[1][:-1] + "Z")
    err = aws_error(ctx, x, "create-mesh", "--mesh-name", "evil", creds=wrong)
    assert err.startswith("An error occurred (InvalidSignatureException) when calling the "
                          "CreateMesh operation: " + MISMATCH), err
    err = aws_error(ctx, x, "list-meshes", creds=("AKIDUNKNOWN", K1[1]))
    assert err == ("An error occurred (UnrecognizedClientException) when calling the ListMeshes "
                   "operation: The security token included in the request is invalid."), err
    err = aws_error(ctx, x, "delete-mesh", "--mesh-name", "shop-2", creds=None)
    assert err == ("An error occurred (MissingAuthenticationTokenException) when calling the "
                   "DeleteMesh operation: Missing Authentication Token"), err
    err = aws_error(ctx, x, "list-meshes", creds=K1, region="us-east-1")
    assert "(InvalidSignatureException)" in err and \
        "Credential should be scoped to a valid region, not 'us-east-1'" in err, err

    names = [m["meshName"] for m in aws(ctx, x, "list-meshes", creds=K1)["meshes"]]
    assert names == ["shop", "shop-2"], names  # nothing refused was written
    aws(ctx, x, "delete-mesh", "--mesh-name", "shop-2", creds=K2)
    assert "MissingAuthenticationTokenException: Missing Authentication Token" in x.stderr


def test_sigv4_raw_requests(ctx):
    """A second SigV4 implementation: a request it signs is served; one signed 16 minutes ago
    (or ahead) is "Signature expired" (not yet current); a body changed after signing, a
    signed header changed, are InvalidSignatureException; /debug/xds needs a signature too."""
    x = start(ctx)
    body = json.dumps({"meshName": "shop"}).encode()
    r = signed(x, "PUT", "/v20190125/meshes", body)
    assert r.status == 200, r.body
    r = signed(x, "GET", "/v20190125/meshes?limit=5&meshOwner=111122223333", key=K2)
    assert r.status == 200 and json.loads(r.body)["meshes"][0]["meshName"] == "shop", r.body

    now = datetime.datetime.now(datetime.timezone.utc)
    st, typ, msg = error_of(signed(x, "GET", "/v20190125/meshes",
                                   when=now - datetime.timedelta(minutes=16)))
    assert (st, typ) == (403, "InvalidSignatureException") and \
        msg.startswith("Signature expired: ") and msg.endswith(" - 15 min.)"), msg
    st, typ, msg = error_of(signed(x, "GET", "/v20190125/meshes",
                                   when=now + datetime.timedelta(minutes=16)))
    assert (st, typ) == (403, "InvalidSignatureException") and \
        msg.startswith("Signature not yet current: "), msg
    assert signed(x, "GET", "/v20190125/meshes",
                  when=now - datetime.timedelta(minutes=10)).status == 200

    evil = json.dumps({"meshName": "shoq"}).encode()
    st, typ, msg = error_of(signed(x, "PUT", "/v20190125/meshes", body, send_body=evil))
    assert (st, typ) == (403, "InvalidSignatureException") and msg.startswith(MISMATCH[:60]), msg
    # A signed header changed in transit (here: the query, which is signed as well).
    hs = sign_v4("GET", "/v20190125/meshes", "limit=5", {"Host": f"127.0.0.1:{x.port}"}, b"", K1)
    with HttpConn(x.port) as c:
        r = c.request("GET", "/v20190125/meshes?limit=6", hs)
    assert error_of(r)[:2] == (403, "InvalidSignatureException"), r.body

    # /debug/xds shows the mesh's configuration: signed or refused.
    with HttpConn(x.port) as c:
        r = c.request("GET", "/debug/xds?mesh=shop")
    assert error_of(r) == (403, "MissingAuthenticationTokenException",
                           "Missing Authentication Token"), r.body
    r = signed(x, "GET", "/debug/xds?mesh=shop")
    assert r.status == 404 and r.header("x-amzn-errortype") == "UnknownOperationException", \
        r.body  # through the check: no --xds-listen here
    # A partial Authorization header.
    with HttpConn(x.port) as c:
        r = c.request("GET", "/v20190125/meshes",
                      {"Authorization": f"AWS4-HMAC-SHA256 Credential={K1[0]}/x"})
    st, typ, msg = error_of(r)
    assert (st, typ) == (403, "IncompleteSignatureException") and "'Signature'" in msg, msg
    names = [m["meshName"] for m in json.loads(signed(x, "GET", "/v20190125/meshes").body)
             ["meshes"]]
    assert names == ["shop"], names


def test_credentials_file_checks(ctx):
    """A credentials file others may read, or one that does not parse, stops remora-xds at
    startup with the reason; without --credentials-file the API answers unsigned requests
    (as before) and says so at startup."""
    exe = str(ctx.bin("remora-xds"))
    base = [exe, "--db", str(ctx.tmp / "f.db"), "--listen", "127.0.0.1:0"]
    for mode, text, want in [
        (0o644, None, "mode 644 lets other users read or change the secret keys"),
        (0o600, "[a]\naws_access_key_id=A\n", "section [a] has aws_access_key_id but not"),
        (0o600, "[a]\nrole_arn=x\n", ":2: [a] role_arn: unknown key"),
    ]:
        p = creds_file(ctx, mode, text)
        r = subprocess.run(base + ["--credentials-file", str(p)], capture_output=True,
                           text=True, timeout=10)
        assert r.returncode == 1 and want in r.stderr, (mode, text, r.returncode, r.stderr)

    x = ctx.start_xds()
    wait_for(lambda: "no --credentials-file: the App Mesh API" in x.stderr, 5, "the warning")
    with HttpConn(x.port) as c:
        assert c.request("GET", "/v20190125/meshes").status == 200
