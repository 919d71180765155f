-- wrk script for bench_routing: every request names one of 100 tenants in
-- its Host header (bench1.localhost .. bench100.localhost), in turn.
-- The hard-wired baseline gets the same headers (and ignores them).
local i = 0
request = function()
  i = (i % 100) + 1
  return wrk.format("GET", "/api/projects", { ["Host"] = "bench" .. i .. ".localhost" })
end
