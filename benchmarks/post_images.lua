-- wrk script: POST real JPEGs to the URL, one image per request, as a multipart/form-data
-- /predict request or as an Open Inference Protocol (/v2) request with one binary BYTES input.
-- Usage: wrk -s benchmarks/post_images.lua URL -- IMAGE_LIST_FILE MAX_REQUESTS_PER_THREAD [v2]
-- It counts every answer that is not 200 and prints the results as one JSON line.

local boundary = "benchmark-boundary-7d1f0c"
local bodies = {}
local next_index = 0
local max_requests = math.huge
sent = 0
not_ok = 0
first_bad_status = 0

local threads = {}

function setup(thread)
   thread:set("thread_number", #threads)
   table.insert(threads, thread)
end

-- wrk.format takes these headers instead of wrk's own: keep those given with -H (an API
-- key, say) that the request does not set itself.
local function with_given_headers(headers)
   for name, value in pairs(wrk.headers) do
      if headers[name] == nil then headers[name] = value end
   end
   return headers
end

local function multipart_request(path, data)
   local headers = {["Content-Type"] = "multipart/form-data; boundary=" .. boundary}
   local name = path:match("([^/]+)$")
   local body = "--" .. boundary .. "\r\n"
      .. 'Content-Disposition: form-data; name="file"; filename="' .. name .. '"\r\n'
      .. "Content-Type: image/jpeg\r\n\r\n" .. data .. "\r\n--" .. boundary .. "--\r\n"
   return wrk.format("POST", nil, with_given_headers(headers), body)
end

-- A 4-byte little-endian length (LuaJIT's Lua 5.1 has no bit operators).
local function le32(n)
   return string.char(n % 256, math.floor(n / 256) % 256, math.floor(n / 65536) % 256,
                      math.floor(n / 16777216) % 256)
end

-- Binary tensor data: the JSON, then the BYTES element as its length and the file's bytes.
-- The answer is the top 3 labels (classification extension), as /predict's top_k=3.
local function v2_request(path, data)
   local header = '{"inputs":[{"name":"image","datatype":"BYTES","shape":[1],'
      .. '"parameters":{"binary_data_size":' .. (#data + 4) .. '}}],'
      .. '"outputs":[{"name":"probabilities","parameters":{"classification":3}}]}'
   local headers = {["Content-Type"] = "application/octet-stream",
                    ["Inference-Header-Content-Length"] = tostring(#header)}
   return wrk.format("POST", nil, with_given_headers(headers), header .. le32(#data) .. data)
end

function init(args)
   max_requests = tonumber(args[2]) or math.huge
   local make = args[3] == "v2" and v2_request or multipart_request
   for path in io.lines(args[1]) do
      local file = assert(io.open(path, "rb"))
      local data = file:read("*a")
      file:close()
      table.insert(bodies, make(path, data))
   end
   -- Threads start at different images so that they do not send the same one in step.
   next_index = (thread_number * 7919) % #bodies
end

function request()
   sent = sent + 1
   if sent > max_requests then
      wrk.thread:stop()
   end
   next_index = next_index % #bodies + 1
   return bodies[next_index]
end

function response(status, headers, body)
   if status ~= 200 then
      not_ok = not_ok + 1
      if first_bad_status == 0 then
         first_bad_status = status
      end
   end
end

function done(summary, latency, requests)
   local not_ok_total, bad_status = 0, 0
   for _, thread in ipairs(threads) do
      not_ok_total = not_ok_total + thread:get("not_ok")
      if bad_status == 0 then
         bad_status = thread:get("first_bad_status")
      end
   end
   local errors = summary.errors
   io.write(string.format(
      'WRK_RESULT {"requests": %d, "duration_us": %d, "not_200": %d, "first_bad_status": %d, '
         .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "status_errors": %d, '
         .. '"timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
      summary.requests, summary.duration, not_ok_total, bad_status,
      errors.connect, errors.read, errors.write, errors.status, errors.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
