-- wrk script for bench/intake.py: POSTs the requests of a data file (a Lua
-- table `data` of {headers, body}), each thread taking every Nth one from its
-- own offset, wrapping around; counts responses by status; prints one JSON line.
-- Arguments after `--`: <data file> <number of wrk threads> <offset: requests already used>.
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  dofile(args[1])
  step = tonumber(args[2])
  reqs = {}
  for i, item in ipairs(data) do
    reqs[i] = wrk.format("POST", nil, item[1], item[2])
  end
  data = nil
  i = id + tonumber(args[3] or 0)
  status = {}
end

function request()
  local r = reqs[(i % #reqs) + 1]
  i = i + step
  return r
end

function response(s, headers, body)
  status[s] = (status[s] or 0) + 1
end

function done(summary, latency, requests)
  local agg = {}
  local next_index = 0
  for _, t in ipairs(threads) do
    next_index = math.max(next_index, t:get("i"))
    for k, v in pairs(t:get("status")) do
      agg[tostring(k)] = (agg[tostring(k)] or 0) + v
    end
  end
  local parts = {}
  for k, v in pairs(agg) do
    table.insert(parts, string.format('"%s": %d', k, v))
  end
  local e = summary.errors
  io.write(string.format(
    '{"wrk": {"requests": %d, "seconds": %.3f, "errors": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d, "next": %d, "status": {%s}}}\n',
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, next_index, table.concat(parts, ", ")))
end
