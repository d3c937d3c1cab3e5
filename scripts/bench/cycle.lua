-- wrk script: cycles pre-signed deliveries (lines of deliveries.py: event, id, signature, body).
-- Each wrk thread takes every Nth line, so the bodies are held in memory once in all.
-- DELIVERIES (file) and THREADS (wrk -t) come from the environment. With ONCE=1 a thread stops
-- once every delivery of its share is answered, so that each is measured as a new delivery (a
-- duplicate costs serve one read and no write); the connections still in flight then (at most
-- one each) repeat a delivery. wrk's own req/s divides by the whole -d duration even when its
-- threads stopped early, so done() then prints ONCE_RPS: requests over the time from the first
-- request sent to the last thread stopping (LuaJIT's ffi reads the monotonic clock).
local threads_total = tonumber(os.getenv("THREADS") or "1")
local once = os.getenv("ONCE") == "1"
local next_id = 0
local threads = {}

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } cycle_timespec;
int clock_gettime(int clock, cycle_timespec *tp);
]]
local timespec = ffi.new("cycle_timespec")
local function now_us()
  ffi.C.clock_gettime(1, timespec) -- CLOCK_MONOTONIC
  return tonumber(timespec.tv_sec) * 1e6 + tonumber(timespec.tv_nsec) / 1e3
end

function setup(thread)
  thread:set("part", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local requests = {}
local i = 0
local answered = 0
started_us = nil
stopped_us = nil

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
  if not started_us then
    started_us = now_us()
  end
  i = i % #requests + 1
  return requests[i]
end

if once then
  function response(status, headers, body)
    answered = answered + 1
    if answered == #requests then
      stopped_us = now_us()
      wrk.thread:stop()
    end
  end
end

function done(summary, latency, requests_)
  io.write(string.format("LAT p50_us=%d p99_us=%d max_us=%d requests=%d non2xx=%d\n",
    latency:percentile(50), latency:percentile(99), latency.max,
    summary.requests, summary.errors.status))
  if once then
    local first, last = nil, nil
    for _, t in ipairs(threads) do
      local s, e = t:get("started_us"), t:get("stopped_us")
      if not s or not e then
        return -- a thread ran out of time: wrk's own req/s is right
      end
      if not first or s < first then first = s end
      if not last or e > last then last = e end
    end
    io.write(string.format("ONCE_RPS %.1f\n", summary.requests / ((last - first) / 1e6)))
  end
end
