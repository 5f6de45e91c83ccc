-- wrk script: every request goes to the next presigned path of a list, wrapping around.
--
-- Environment (set by s3_bench.py):
--   BENCH_PATHS   file with one request target per line ("/bucket/key?X-Amz-...")
--   BENCH_METHOD  GET or PUT
--   BENCH_BODY    file whose bytes are sent as the body of every request (PUT), optional
--   BENCH_THREADS the -t given to wrk, so each thread starts on its own slice of the list
--                 (two threads never write the same key at the same moment)

local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  paths = {}
  for line in io.lines(os.getenv("BENCH_PATHS")) do
    paths[#paths + 1] = line
  end
  method = os.getenv("BENCH_METHOD") or "GET"
  body = nil
  local body_file = os.getenv("BENCH_BODY")
  if body_file ~= nil and body_file ~= "" then
    local f = assert(io.open(body_file, "rb"))
    body = f:read("*a")
    f:close()
  end
  local threads = tonumber(os.getenv("BENCH_THREADS") or "1")
  position = math.floor(#paths * (id or 0) / threads)
end

function request()
  position = position % #paths + 1
  return wrk.format(method, paths[position], nil, body)
end
