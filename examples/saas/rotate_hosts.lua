-- wrk script for bench_routing: every request names one of 100 hosts in its
-- Host header, in turn: <prefix>1.localhost .. <prefix>100.localhost, where
-- the prefix is wrk's first script argument (`wrk … -- alias`), "bench" by
-- default (100 tenants). The hard-wired baseline gets the same headers (and
-- ignores them).
local i = 0
local prefix = "bench"
init = function(args)
  if args[1] then prefix = args[1] end
end
request = function()
  i = (i % 100) + 1
  return wrk.format("GET", "/api/projects", { ["Host"] = prefix .. i .. ".localhost" })
end
