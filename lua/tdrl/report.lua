-- Run reports: one self-contained HTML page per run folder (figures embedded as data: URIs,
-- inline CSS, no external resources) and a short Markdown summary beside it.
--   report.html(run_dir, spec)      -> writes run_dir/report.html, returns its path
--   report.markdown(run_dir, spec)  -> writes run_dir/summary.md (figures linked by relative path)
-- spec = {title = "...", intro = "...", sections = {
--           {heading = "NMI", text = "paragraphs, separated by blank lines",
--            table = {columns = {"t", "accuracy"}, rows = {{0.1, 0.93}, ...}, format = "%.3f"},
--            figure = "nmi.png", caption = "..."},           -- or figures = {{file=, caption=}, ...}
--         ...},
--         config = {...} | "config.json"}                    -- a table, or a JSON file in run_dir
-- Text is plain: it is escaped, never interpreted as HTML or Markdown. Figure paths are relative
-- to run_dir (absolute paths work too). Numbers in tables print as given by format, else with
-- up to 4 significant digits.
local json = require 'tdrl.json'
local fs = require 'tdrl.util.fs'

local M = {}

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64_ENC = {}
for i = 0, 63 do B64_ENC[i] = B64:sub(i + 1, i + 1) end

--- standard base64 (RFC 4648, with padding)
function M.base64(s)
  if type(s) ~= "string" then error("report.base64: expected a string, got " .. type(s), 2) end
  local out, n = {}, 0
  local len = #s
  local byte = string.byte
  for i = 1, len - 2, 3 do
    local a, b, c = byte(s, i, i + 2)
    local v = (a << 16) | (b << 8) | c
    n = n + 1
    out[n] = B64_ENC[v >> 18] .. B64_ENC[(v >> 12) & 63] .. B64_ENC[(v >> 6) & 63] .. B64_ENC[v & 63]
  end
  local rest = len % 3
  if rest == 1 then
    local v = byte(s, len) << 16
    n = n + 1
    out[n] = B64_ENC[v >> 18] .. B64_ENC[(v >> 12) & 63] .. "=="
  elseif rest == 2 then
    local a, b = byte(s, len - 1, len)
    local v = (a << 16) | (b << 8)
    n = n + 1
    out[n] = B64_ENC[v >> 18] .. B64_ENC[(v >> 12) & 63] .. B64_ENC[(v >> 6) & 63] .. "="
  end
  return table.concat(out)
end

local ESC = {["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;"}

--- escapes text for HTML content and attribute values
function M.escape_html(s)
  return (tostring(s):gsub("[&<>\"']", ESC))
end

--- escapes text for Markdown (so it prints literally; | too, for table cells)
function M.escape_md(s)
  s = tostring(s):gsub("\n", " "):gsub("([\\`*_%[%]|<>])", "\\%1"):gsub("^#", "\\#")
  return s
end

local function cell_text(v, fmt)
  if type(v) == "number" then
    if fmt then return string.format(fmt, v) end
    if v ~= v then return "NaN" end
    if math.type(v) == "integer" then return tostring(v) end
    if v == math.floor(v) and math.abs(v) < 1e15 then return string.format("%d", v) end
    return string.format("%.4g", v)
  end
  if v == nil then return "" end
  return tostring(v)
end

local function paragraphs(text)
  if text == nil then return {} end
  if type(text) == "table" then
    local out = {}
    for i, p in ipairs(text) do out[i] = tostring(p) end
    return out
  end
  local out = {}
  local s = tostring(text):gsub("\r\n", "\n")
  for para in (s .. "\n\n"):gmatch("(.-)\n%s*\n") do
    para = para:gsub("^%s+", ""):gsub("%s+$", "")
    if para ~= "" then out[#out + 1] = para end
  end
  return out
end

-- config: nested tables flattened to sorted "a.b.c" = value rows; lists of scalars kept whole
local function flatten(cfg, prefix, rows)
  local keys = {}
  for k in pairs(cfg) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    local v = cfg[k]
    local name = prefix and (prefix .. "." .. tostring(k)) or tostring(k)
    if type(v) == "table" then
      local list = #v > 0
      if list then
        for _, x in ipairs(v) do if type(x) == "table" then list = false end end
      end
      if list or next(v) == nil then
        local ok, s = pcall(json.encode, v)
        rows[#rows + 1] = {name, ok and s or tostring(v)}
      else
        flatten(v, name, rows)
      end
    else
      rows[#rows + 1] = {name, cell_text(v)}
    end
  end
  return rows
end

local function load_config(run_dir, cfg, fn)
  if cfg == nil then return nil end
  if type(cfg) == "string" then
    local path = cfg:sub(1, 1) == "/" and cfg or (run_dir .. "/" .. cfg)
    local s = fs.read(path)
    if not s then error(fn .. ": cannot read the configuration " .. path, 3) end
    local ok, v = pcall(json.decode, s)
    if not ok then error(fn .. ": " .. path .. ": " .. tostring(v), 3) end
    cfg = v
  end
  if type(cfg) ~= "table" then error(fn .. ": config must be a table or a JSON file name", 3) end
  return flatten(cfg, nil, {})
end

local function check(run_dir, spec, fn)
  if type(run_dir) ~= "string" then error(fn .. ": expects the run folder as first argument", 3) end
  if type(spec) ~= "table" then error(fn .. ": expects a spec table {title=, sections=, config=}", 3) end
  local sections = spec.sections or {}
  if type(sections) ~= "table" then error(fn .. ": sections must be a list", 3) end
  for i, s in ipairs(sections) do
    if type(s) ~= "table" then error(string.format("%s: section %d is not a table", fn, i), 3) end
    local t = s.table
    if t ~= nil then
      if type(t) ~= "table" or type(t.columns) ~= "table" or type(t.rows) ~= "table" then
        error(string.format("%s: section %d: table needs columns = {...} and rows = {{...}, ...}", fn, i), 3)
      end
      for r, row in ipairs(t.rows) do
        if type(row) ~= "table" then error(string.format("%s: section %d: row %d is not a list", fn, i, r), 3) end
        if #row > #t.columns then
          error(string.format("%s: section %d: row %d has %d cells for %d columns", fn, i, r, #row, #t.columns), 3)
        end
      end
    end
  end
  fs.mkdir(run_dir)
  return sections
end

-- the figures of a section as {file=, caption=}
local function figures(s)
  local out = {}
  if s.figure then out[1] = {file = s.figure, caption = s.caption} end
  for _, f in ipairs(s.figures or {}) do
    if type(f) == "string" then out[#out + 1] = {file = f} else out[#out + 1] = f end
  end
  return out
end

local function figure_path(run_dir, file)
  file = tostring(file)
  if file:sub(1, 1) == "/" then return file end
  return run_dir .. "/" .. file
end

local function relative(run_dir, file)
  file = tostring(file)
  local prefix = run_dir:gsub("/+$", "") .. "/"
  if file:sub(1, #prefix) == prefix then return file:sub(#prefix + 1) end
  return file
end

local CSS = [[
body{margin:0;background:#f6f7f9;color:#1f2328;font:16px/1.55 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif}
main{max-width:1000px;margin:0 auto;padding:28px 36px 60px;background:#fff;min-height:100vh;box-shadow:0 0 0 1px #e3e6ea}
h1{font-size:28px;margin:8px 0 4px}h2{font-size:21px;margin:36px 0 10px;padding-bottom:4px;border-bottom:1px solid #e3e6ea}
.meta{color:#656d76;font-size:14px;margin:0 0 18px}
nav{font-size:14px;background:#f6f8fa;border:1px solid #e3e6ea;border-radius:6px;padding:8px 14px;margin:14px 0}
nav a{color:#0b5cad;text-decoration:none;margin-right:16px;white-space:nowrap}
p{margin:8px 0 12px}
table{border-collapse:collapse;margin:12px 0 18px;font-size:14px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d8dde3;padding:5px 10px;text-align:left;vertical-align:top}
th{background:#f1f3f5;font-weight:600}tr:nth-child(even) td{background:#fafbfc}
td.num{text-align:right;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
table.config td:first-child{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;color:#3b4450}
figure{margin:16px 0 22px;text-align:center}
figure img{max-width:100%;height:auto;border:1px solid #e3e6ea;image-rendering:auto}
figcaption{color:#4d555e;font-size:14px;margin-top:6px}
.missing{color:#a40e26}
]]

local function html_table(t, class)
  local out = {"<table" .. (class and (' class="' .. class .. '"') or "") .. "><thead><tr>"}
  for _, c in ipairs(t.columns) do out[#out + 1] = "<th>" .. M.escape_html(c) .. "</th>" end
  out[#out + 1] = "</tr></thead><tbody>"
  for _, row in ipairs(t.rows) do
    out[#out + 1] = "<tr>"
    for j = 1, #t.columns do
      local v = row[j]
      local num = type(v) == "number"
      local f = type(t.format) == "table" and t.format[j] or (type(t.format) == "string" and t.format) or nil
      out[#out + 1] = (num and '<td class="num">' or "<td>") .. M.escape_html(cell_text(v, num and f or nil)) .. "</td>"
    end
    out[#out + 1] = "</tr>"
  end
  out[#out + 1] = "</tbody></table>"
  return table.concat(out)
end

--- writes run_dir/report.html; returns its path
function M.html(run_dir, spec)
  local FN = "report.html"
  local sections = check(run_dir, spec, FN)
  local title = spec.title or ("Run " .. run_dir)
  local config = load_config(run_dir, spec.config, FN)
  local o = {}
  local function w(s) o[#o + 1] = s end
  w('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n')
  w('<meta name="viewport" content="width=device-width, initial-scale=1">\n')
  w("<title>" .. M.escape_html(title) .. "</title>\n<style>\n" .. CSS .. "</style>\n</head>\n<body>\n<main>\n")
  w("<h1>" .. M.escape_html(title) .. "</h1>\n")
  w('<p class="meta">Run folder ' .. M.escape_html(run_dir) .. " &middot; written " .. os.date("%Y-%m-%d %H:%M") .. "</p>\n")
  if #sections + (config and 1 or 0) > 1 then
    w("<nav>")
    for i, s in ipairs(sections) do
      w('<a href="#s' .. i .. '">' .. M.escape_html(s.heading or ("Section " .. i)) .. "</a>")
    end
    if config then w('<a href="#config">Configuration</a>') end
    w("</nav>\n")
  end
  for _, p in ipairs(paragraphs(spec.intro)) do w("<p>" .. M.escape_html(p) .. "</p>\n") end
  for i, s in ipairs(sections) do
    w('<section id="s' .. i .. '">\n')
    if s.heading then w("<h2>" .. M.escape_html(s.heading) .. "</h2>\n") end
    for _, p in ipairs(paragraphs(s.text)) do w("<p>" .. M.escape_html(p) .. "</p>\n") end
    if s.table then w(html_table(s.table) .. "\n") end
    for _, f in ipairs(figures(s)) do
      local path = figure_path(run_dir, f.file)
      local bytes = fs.read(path)
      local alt = M.escape_html(f.caption or f.file)
      w("<figure>")
      if bytes then
        local mime = tostring(f.file):lower():match("%.jpe?g$") and "image/jpeg"
          or tostring(f.file):lower():match("%.svg$") and "image/svg+xml" or "image/png"
        w('<img alt="' .. alt .. '" src="data:' .. mime .. ";base64," .. M.base64(bytes) .. '">')
      else
        w('<p class="missing">Figure ' .. M.escape_html(f.file) .. " was not found.</p>")
      end
      if f.caption then w("<figcaption>" .. M.escape_html(f.caption) .. "</figcaption>") end
      w("</figure>\n")
    end
    w("</section>\n")
  end
  if config then
    w('<section id="config">\n<h2>Configuration</h2>\n')
    w(html_table({columns = {"setting", "value"}, rows = config}, "config") .. "\n</section>\n")
  end
  w("</main>\n</body>\n</html>\n")
  local out = run_dir .. "/report.html"
  fs.write(out, table.concat(o))
  return out
end

--- writes run_dir/summary.md; returns its path
function M.markdown(run_dir, spec)
  local FN = "report.markdown"
  local sections = check(run_dir, spec, FN)
  local title = spec.title or ("Run " .. run_dir)
  local config = load_config(run_dir, spec.config, FN)
  local o = {}
  local function w(s) o[#o + 1] = s end
  w("# " .. M.escape_md(title) .. "\n\n")
  for _, p in ipairs(paragraphs(spec.intro)) do w(M.escape_md(p) .. "\n\n") end
  for i, s in ipairs(sections) do
    w("## " .. M.escape_md(s.heading or ("Section " .. i)) .. "\n\n")
    for _, p in ipairs(paragraphs(s.text)) do w(M.escape_md(p) .. "\n\n") end
    local t = s.table
    if t then
      local head, rule = {}, {}
      for j, c in ipairs(t.columns) do
        head[j] = M.escape_md(c)
        local numeric = true
        for _, row in ipairs(t.rows) do if row[j] ~= nil and type(row[j]) ~= "number" then numeric = false end end
        rule[j] = numeric and "---:" or "---"
      end
      w("| " .. table.concat(head, " | ") .. " |\n| " .. table.concat(rule, " | ") .. " |\n")
      for _, row in ipairs(t.rows) do
        local cells = {}
        for j = 1, #t.columns do
          local v = row[j]
          local f = type(t.format) == "table" and t.format[j] or (type(t.format) == "string" and t.format) or nil
          cells[j] = M.escape_md(cell_text(v, type(v) == "number" and f or nil))
        end
        w("| " .. table.concat(cells, " | ") .. " |\n")
      end
      w("\n")
    end
    for _, f in ipairs(figures(s)) do
      local rel = relative(run_dir, f.file):gsub(" ", "%%20"):gsub("%(", "%%28"):gsub("%)", "%%29")
      w("![" .. M.escape_md(f.caption or f.file) .. "](" .. rel .. ")\n")
      if f.caption then w("\n*" .. M.escape_md(f.caption) .. "*\n") end
      w("\n")
    end
  end
  if config then
    w("## Configuration\n\n| setting | value |\n| --- | --- |\n")
    for _, r in ipairs(config) do w("| `" .. r[1]:gsub("`", "'") .. "` | " .. M.escape_md(r[2]) .. " |\n") end
    w("\n")
  end
  local out = run_dir .. "/summary.md"
  fs.write(out, table.concat(o))
  return out
end

return M
