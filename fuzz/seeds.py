#!/usr/bin/env python3
"""Writes each fuzz target's seed corpus from tests/fixtures and the published vectors.

    fuzz/seeds.py DIR     writes DIR/<target>/<seed> for every target

Inputs use the framing of `hookrelay::fuzzing` (src/fuzzing.rs): a first line, then
`name: value` headers, a blank line, the body. Webhooks are signed as each provider
signs, with the secrets the targets verify against, so the fuzzer starts from
deliveries that pass and mutates from there.
"""
import base64
import hashlib
import hmac
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests/fixtures"
SECRET = b"It's a Secret to Everybody"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def hexmac(key, body):
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def standard(key_b64, msg_id, timestamp, body):
    key = base64.b64decode(key_b64.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return f"v1,{base64.b64encode(mac).decode()}"


def framed(first, headers, body):
    head = "\n".join([first] + [f"{k}: {v}" for k, v in headers])
    return head.encode() + b"\n\n" + body


def webhooks():
    now = int(time.time())
    github = (FIXTURES / "github/push.json").read_bytes()
    yield "github-push", framed("github", [
        ("content-type", "application/json"), ("x-github-event", "push"),
        ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("x-hub-signature-256", "sha256=" + hexmac(SECRET, github))], github)
    # GitHub's published vector.
    yield "github-vector", framed("github", [
        ("x-github-event", "ping"), ("x-github-delivery", "1"),
        ("x-hub-signature-256", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")],
        b"Hello, World!")
    gitlab = (FIXTURES / "gitlab/push.json").read_bytes()
    yield "gitlab-token", framed("gitlab", [
        ("x-gitlab-event", "Push Hook"), ("idempotency-key", "f3b2"), ("x-gitlab-token", SECRET.decode())], gitlab)
    yield "gitlab-signing", framed("gitlab-signing", [
        ("x-gitlab-event", "Push Hook"), ("idempotency-key", "f3b2"), ("webhook-id", "f3b2"),
        ("webhook-timestamp", str(now)), ("webhook-signature", standard(WHSEC, "f3b2", now, gitlab))], gitlab)
    for provider in ["gitea", "forgejo"]:
        body = (FIXTURES / f"{provider}/push.json").read_bytes()
        yield f"{provider}-push", framed(provider, [
            (f"x-{provider}-event", "push"), (f"x-{provider}-delivery", "d-1"),
            (f"x-{provider}-signature", hexmac(SECRET, body)), ("x-gitea-event", "push"),
            ("x-gitea-delivery", "d-1"), ("x-gitea-signature", hexmac(SECRET, body))], body)
    for name, key, path in [("bitbucket", "repo:push", "bitbucket/repo_push.json"),
                            ("bitbucket-dc", "repo:refs_changed", "bitbucket-server/repo_refs_changed.json")]:
        body = (FIXTURES / path).read_bytes()
        yield name, framed("bitbucket", [
            ("x-event-key", key), ("x-request-uuid", "r-1"), ("x-request-id", "r-1"),
            ("x-hub-signature", "sha256=" + hexmac(SECRET, body))], body)
    contact = (FIXTURES / "standard-webhooks/contact.created.json").read_bytes()
    yield "standard", framed("standard", [
        ("webhook-id", "msg_1"), ("webhook-timestamp", str(now)),
        ("webhook-signature", standard(WHSEC, "msg_1", now, contact))], contact)
    for i, vector in enumerate(json.loads((FIXTURES / "standard-webhooks/vectors.json").read_text())):
        yield f"standard-vector-{i}", framed("standard", [
            ("webhook-id", vector["msg_id"]), ("webhook-timestamp", str(vector["timestamp"])),
            ("webhook-signature", vector["expected_signature"])], vector["payload"].encode())


def signature_headers():
    for i, vector in enumerate(json.loads((FIXTURES / "standard-webhooks/vectors.json").read_text())):
        sigs = f"v1a,abc {vector['expected_signature']} v2,xyz"
        yield f"vector-{i}", "\n".join([vector["msg_id"], str(vector["timestamp"]), sigs]).encode() + b"\n" + vector["payload"].encode()
    yield "github-vector", b"1\n0\nsha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17\nHello, World!"


def git_refs():
    for provider, event, path in [("github", "push", "github/push.json"), ("github", "create", "github/create.json"),
                                  ("github", "pull_request", "github/pull_request.opened.json"),
                                  ("gitlab", "Push Hook", "gitlab/push.json"), ("gitlab", "Tag Push Hook", "gitlab/tag_push.json"),
                                  ("gitea", "push", "gitea/push.json"), ("bitbucket", "repo:push", "bitbucket/repo_push.json"),
                                  ("bitbucket", "repo:refs_changed", "bitbucket-server/repo_refs_changed.json")]:
        yield f"{provider}-{event.replace(' ', '_').replace(':', '_')}", framed(f"{provider} {event}", [], (FIXTURES / path).read_bytes())


def event_type_paths():
    yield "type", b"type\n" + (FIXTURES / "standard-webhooks/contact.created.json").read_bytes()
    yield "nested", b"data.kind\n{\"data\":{\"kind\":\"invoice.paid\"}}"


def oauth():
    basic = base64.b64encode(b"hrc_0123456789abcdef0123456789abcdef:s%3Acret").decode()
    yield "client-credentials", framed("", [("content-type", "application/x-www-form-urlencoded"),
                                            ("authorization", f"Basic {basic}")], b"grant_type=client_credentials&scope=events%3Aread")
    yield "exchange", framed("", [("content-type", "application/x-www-form-urlencoded")],
                             b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=eyJ.x.y&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt")


def claims():
    yield "github-actions", b"a repository=acme/*\na ref=refs/heads/main\nb repository=acme/deploy-bot\nt repository=acme/deploy-bot\nt ref=refs/heads/main\n"
    yield "apart", b"a sub=repo:acme/*\nb sub=repo:other/*\nt sub=repo:acme/x\n"


def addresses():
    yield "v4-loopback", bytes([127, 0, 0, 1])
    yield "v6-mapped", bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 1])
    yield "nat64", bytes.fromhex("0064ff9b0000000000000000c0a80001")
    yield "6to4", bytes.fromhex("2002c0a800010000000000000000000a")
    yield "text", b"https://[::ffff:169.254.169.254]/latest"


def agent_config():
    yield "agent", b'server = "https://relay.example.com"\nclient-id = "hrc_0123"\nconsumer = "ci"\ntarget = "http://127.0.0.1:8080/hook"\nbranch = ["main", "release/*"]\nverbose = 2\n'


TARGETS = {
    "webhook": webhooks, "signature_headers": signature_headers, "git_ref": git_refs,
    "event_type_path": event_type_paths, "oauth": oauth, "claims": claims, "address": addresses,
    "agent_config": agent_config,
}

if __name__ == "__main__":
    out = pathlib.Path(sys.argv[1])
    for target, seeds in TARGETS.items():
        directory = out / target
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in seeds():
            (directory / f"seed-{name}").write_bytes(data)
