-- wrk script for scripts/wrk-ingest: GitHub's 7.3 KB push (tests/fixtures/github/push.json),
-- signed once (GitHub signs the body only), a unique X-GitHub-Delivery per request
-- (thread, counter), keep-alive. WRK_BODY, WRK_SIGNATURE: set by scripts/wrk-ingest.
local f = assert(io.open(os.getenv("WRK_BODY"), "rb"))
local body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.body = body
wrk.headers["content-type"] = "application/json"
wrk.headers["x-github-event"] = "push"
wrk.headers["x-hub-signature-256"] = os.getenv("WRK_SIGNATURE")

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local counter = 0
function request()
  counter = counter + 1
  wrk.headers["x-github-delivery"] = string.format("wrk-%d-%d-%d", os.time(), tid, counter)
  return wrk.format()
end
