-- wrk script for bench/soak.py: every request is the next line of a mixed list ("METHOD TARGET"), each
-- thread starting on its own slice; PUTs send the body file. Status codes are counted per thread and
-- printed by done() as one JSON line (soak.py reads it).
--
-- Environment (set by soak.py):
--   SOAK_REQUESTS  file with one "METHOD TARGET" per line (targets are presigned: wrk cannot sign)
--   SOAK_BODY      file whose bytes are the body of every PUT
--   SOAK_THREADS   the -t given to wrk

local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  methods, targets = {}, {}
  for line in io.lines(os.getenv("SOAK_REQUESTS")) do
    local m, t = line:match("^(%S+) (%S+)$")
    methods[#methods + 1] = m
    targets[#targets + 1] = t
  end
  local f = assert(io.open(os.getenv("SOAK_BODY"), "rb"))
  body = f:read("*a")
  f:close()
  local n = tonumber(os.getenv("SOAK_THREADS") or "1")
  position = math.floor(#targets * (id or 0) / n)
  codes = {}
end

function request()
  position = position % #targets + 1
  local m = methods[position]
  if m == "PUT" then
    return wrk.format("PUT", targets[position], {["Content-Type"] = "application/octet-stream"}, body)
  end
  return wrk.format(m, targets[position])
end

function response(status, headers, body)
  local k = tostring(status)
  codes[k] = (codes[k] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    local c = thread:get("codes")
    for k, v in pairs(c) do
      total[k] = (total[k] or 0) + v
    end
  end
  local parts = {}
  for k, v in pairs(total) do
    parts[#parts + 1] = string.format('"%s": %d', k, v)
  end
  local e = summary.errors
  io.write(string.format(
    'SOAK {"requests": %d, "duration_us": %d, "codes": {%s}, "socket_errors": {"connect": %d, "read": %d, ' ..
    '"write": %d, "timeout": %d}, "p50_ms": %.2f, "p99_ms": %.2f}\n',
    summary.requests, summary.duration, table.concat(parts, ", "), e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
