-- wrk script: every request carries a different pre-generated token (the cold case).
-- TOKENS_FILE holds one token per line; each wrk thread takes a disjoint share.
local counter = 0
local threads = {}

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  local total = tonumber(os.getenv("WRK_THREADS") or "1")
  tokens = {}
  local i = 0
  for line in io.lines(os.getenv("TOKENS_FILE")) do
    if i % total == (id - 1) then tokens[#tokens + 1] = "Bearer " .. line end
    i = i + 1
  end
  -- Start where the previous run stopped, so no run replays tokens an earlier run verified.
  n = tonumber(os.getenv("TOKENS_OFFSET") or "0") % math.max(1, #tokens)
  wrapped = 0
end

function request()
  n = n + 1
  if n > #tokens then n = 1; wrapped = wrapped + 1 end
  return wrk.format("GET", "/items", { ["Authorization"] = tokens[n] })
end

function done(summary, latency, requests)
  local w = 0
  for _, t in ipairs(threads) do w = w + (t:get("wrapped") or 0) end
  io.write(string.format("WRAPPED %d\n", w))
end
