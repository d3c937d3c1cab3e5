-- wrk script: cycles pre-signed deliveries (lines of deliveries.py: event, id, signature, body).
-- Each wrk thread takes every Nth line, so the bodies are held in memory once in all.
-- DELIVERIES (file) and THREADS (wrk -t) come from the environment.
local threads_total = tonumber(os.getenv("THREADS") or "1")
local next_id = 0

function setup(thread)
  thread:set("part", next_id)
  next_id = next_id + 1
end

local requests = {}
local i = 0

function init(args)
  local n = 0
  for line in io.lines(os.getenv("DELIVERIES")) do
    if n % threads_total == part then
      local event, id, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      requests[#requests + 1] = wrk.format("POST", "/webhooks/github", {
        ["Content-Type"] = "application/json",
        ["X-GitHub-Event"] = event,
        ["X-GitHub-Delivery"] = id,
        ["X-Hub-Signature-256"] = sig,
      }, body)
    end
    n = n + 1
  end
end

function request()
  i = i % #requests + 1
  return requests[i]
end

function done(summary, latency, requests_)
  io.write(string.format("LAT p50_us=%d p99_us=%d max_us=%d requests=%d non2xx=%d\n",
    latency:percentile(50), latency:percentile(99), latency.max,
    summary.requests, summary.errors.status))
end
