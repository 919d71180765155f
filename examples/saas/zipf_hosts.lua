-- wrk script for bench_saas_zipf: each request names one tenant host,
-- <prefix><k>.localhost with k in 1..n, drawn per request either Zipf
-- (s = 1: P(k) proportional to 1/k, tenant 1 the most popular) or uniform.
-- Arguments after `--`: prefix (default "z"), n (default 1000), and
-- "zipf" (default) or "uniform". n = 1 sends every request to one tenant.
local prefix, n, mode = "z", 1000, "zipf"
local cdf = {}

init = function(args)
  if args[1] then prefix = args[1] end
  if args[2] then n = tonumber(args[2]) end
  if args[3] then mode = args[3] end
  local total = 0
  for k = 1, n do
    total = total + 1 / k
    cdf[k] = total
  end
  for k = 1, n do cdf[k] = cdf[k] / total end
  -- Each wrk thread has its own Lua state: seed each differently.
  local addr = tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0
  math.randomseed(os.time() + addr % 1000003)
end

local function pick()
  if mode == "uniform" then return math.random(n) end
  local u = math.random()
  local lo, hi = 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return lo
end

request = function()
  return wrk.format("GET", "/", { ["Host"] = prefix .. pick() .. ".localhost" })
end
