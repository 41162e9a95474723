-- wrk script: every request carries the next token of the file named by BENCH_TOKENS
-- (one token a line), as "Authorization: Bearer <token>", starting after the first
-- BENCH_TOKENS_OFFSET tokens (bench.py moves the offset on from run to run, so no token is sent
-- twice in a run while the file lasts). The requests are built once, in init, so the
-- per-request cost in wrk is a table lookup. Past the end the stream wraps around (bench.py
-- flags it).
local path = os.getenv("BENCH_TOKENS")
local offset = tonumber(os.getenv("BENCH_TOKENS_OFFSET") or "0") or 0
local requests = {}
local n = 0
local i = 0

function init(args)
  if not path then
    error("BENCH_TOKENS is not set")
  end
  local f = io.open(path, "r")
  if not f then
    error("cannot open BENCH_TOKENS file " .. path)
  end
  for line in f:lines() do
    if #line > 0 then
      n = n + 1
      requests[n] = wrk.format("GET", nil, { ["Authorization"] = "Bearer " .. line })
    end
  end
  f:close()
  if n == 0 then
    error("no tokens in " .. path)
  end
  i = offset % n
end

function request()
  i = i + 1
  if i > n then
    i = 1
  end
  return requests[i]
end
