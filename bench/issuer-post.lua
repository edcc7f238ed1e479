-- wrk script for `BENCH_LOADGEN=wrk npm run bench:issuer`: every request is the same token request
-- (WRK_BODY, WRK_AUTH). With WRK_RATE set, requests are paced to that many per second overall
-- (the node:http floor is measured at Tessera's rate): each request takes the next free slot on a
-- shared schedule and waits for it. wrk's delay() counts whole milliseconds, so a request may leave
-- up to 1 ms early, but slots are handed out at the rate, so the long-run rate is the rate.
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = os.getenv("WRK_AUTH")

local rate = tonumber(os.getenv("WRK_RATE") or "0")
if rate > 0 then
  local interval = 1000 / rate
  local last = 0
  function delay()
    local t = now_ms()
    last = math.max(last + interval, t)
    return math.floor(last - t)
  end
end
