-- tdrl.report: a self-contained HTML page and a Markdown summary for a run folder.
local report = require 'tdrl.report'
local plot = require 'tdrl.plot'
local fs = require 'tdrl.util.fs'
local json = require 'tdrl.json'

local function find(s, pat) return s:find(pat, 1, true) ~= nil end

local function count(s, pat)
  local n, i = 0, 1
  while true do
    local a, b = s:find(pat, i, true)
    if not a then return n end
    n, i = n + 1, b + 1
  end
end

local base = os.tmpname() -- created empty by Lua; only its unique name is used
os.remove(base)
local dir = base .. ".d"
fs.mkdir(dir)
local made = {}
local function file(name) made[#made + 1] = dir .. "/" .. name; return dir .. "/" .. name end

plot.bars({labels = {"a", "b"}, values = {0.5, 0.75}}, {title = "fig"}, file("fig.png"))
fs.write(file("config.json"), json.encode({model = {latent = 2, preset = "tiny"}, seeds = {0, 1, 2}, lr = 2e-4}))

local spec_ = {
  title = "Run <synthetic> & friends",
  intro = "First paragraph.\n\nSecond paragraph.",
  sections = {
    {heading = "Accuracy", text = "Accuracy per head; x < y & \"quotes\".",
      table = {columns = {"head", "accuracy", "seeds"}, rows = {{"<b>GRU</b>", 0.93456, 3}, {"MLP | z", 0.5, 3}},
        format = {nil, "%.3f"}},
      figure = "fig.png", caption = "Bars <of> accuracy"},
    {heading = "NMI", text = {"One paragraph.", "Another."}, figures = {{file = file("fig.png"), caption = "again"}}},
    {heading = "Missing", figure = "nope.png"},
  },
  config = {dataset = "synthetic", model = {latent = 2, nested = {deep = true}}, seeds = {0, 1, 2}},
}

describe("report", function()
  it("base64-encodes RFC 4648 test vectors", function()
    local want = {[""] = "", f = "Zg==", fo = "Zm8=", foo = "Zm9v", foob = "Zm9vYg==", fooba = "Zm9vYmE=",
      foobar = "Zm9vYmFy"}
    for k, v in pairs(want) do spec.eq(report.base64(k), v) end
    spec.eq(report.base64("\0\255\254"), "AP/+")
  end)
  it("writes a self-contained HTML page with escaped text and tables", function()
    local path = report.html(dir, spec_)
    spec.eq(path, dir .. "/report.html")
    made[#made + 1] = path
    local s = assert(fs.read(path))
    spec.truthy(s:sub(1, 15) == "<!DOCTYPE html>")
    spec.truthy(find(s, "<title>Run &lt;synthetic&gt; &amp; friends</title>"), "escaped title")
    spec.truthy(find(s, "<td>&lt;b&gt;GRU&lt;/b&gt;</td>"), "escaped cell")
    spec.truthy(not find(s, "<b>GRU"), "no raw HTML from the data")
    spec.truthy(find(s, "<td>MLP | z</td>"))
    spec.truthy(find(s, '<td class="num">0.935</td>'), "per-column format")
    spec.truthy(find(s, '<td class="num">3</td>'))
    spec.truthy(find(s, "x &lt; y &amp; &quot;quotes&quot;."), "escaped paragraph")
    spec.eq(count(s, "<p>First paragraph.</p>") + count(s, "<p>Second paragraph.</p>"), 2)
    spec.truthy(find(s, "<figcaption>Bars &lt;of&gt; accuracy</figcaption>"))
    spec.truthy(find(s, "nope.png was not found"), "a missing figure is reported in the page")
  end)
  it("embeds figures as base64 data URIs and links nothing outside", function()
    local s = assert(fs.read(dir .. "/report.html"))
    local png = assert(fs.read(dir .. "/fig.png"))
    spec.truthy(find(s, 'src="data:image/png;base64,' .. report.base64(png) .. '"'), "the figure's bytes")
    spec.eq(count(s, "data:image/png;base64,"), 2)
    for _, bad in ipairs({"http://", "https://", "<link", "<script", "@import", "url(", "src=\"/", "src=\"fig"}) do
      spec.truthy(not find(s, bad), "external reference " .. bad)
    end
    for href in s:gmatch('href="([^"]*)"') do
      spec.truthy(href:sub(1, 1) == "#", "only in-page links: " .. href)
    end
  end)
  it("lists the configuration, flattened and sorted", function()
    local s = assert(fs.read(dir .. "/report.html"))
    local a = s:find("<td>dataset</td><td>synthetic</td>", 1, true)
    local b = s:find("<td>model.latent</td><td class=\"num\">2</td>", 1, true)
      or s:find("<td>model.latent</td><td>2</td>", 1, true)
    local c = s:find("<td>model.nested.deep</td><td>true</td>", 1, true)
    local d = s:find("<td>seeds</td><td>[0,1,2]</td>", 1, true)
    spec.truthy(a and b and c and d, "config rows present")
    spec.truthy(a < b and b < c and c < d, "sorted by key")
  end)
  it("writes a Markdown summary listing the sections", function()
    local path = report.markdown(dir, spec_)
    made[#made + 1] = path
    spec.eq(path, dir .. "/summary.md")
    local s = assert(fs.read(path))
    spec.truthy(s:sub(1, 2) == "# ")
    local a, b, c = s:find("\n## Accuracy\n", 1, true), s:find("\n## NMI\n", 1, true), s:find("\n## Missing\n", 1, true)
    spec.truthy(a and b and c and a < b and b < c, "sections in order")
    spec.truthy(find(s, "| head | accuracy | seeds |"), "table header")
    spec.truthy(find(s, "| --- | ---: | ---: |"), "numeric columns right-aligned")
    spec.truthy(find(s, "| \\<b\\>GRU\\</b\\> | 0.935 | 3 |"), "escaped row")
    spec.truthy(find(s, "| MLP \\| z | 0.500 | 3 |"), "pipes escaped in cells")
    spec.truthy(find(s, "](fig.png)"), "figure linked by relative path")
    spec.eq(count(s, "](fig.png)"), 2, "an absolute path inside the run folder becomes relative")
    spec.truthy(find(s, "## Configuration"))
    spec.truthy(not find(s, "base64"), "no embedded images in Markdown")
  end)
  it("reads the configuration from a JSON file in the run folder", function()
    local path = report.html(dir, {title = "cfg", config = "config.json"})
    local s = assert(fs.read(path))
    spec.truthy(find(s, "<td>model.preset</td><td>tiny</td>"))
    spec.truthy(find(s, "<td>lr</td><td class=\"num\">0.0002</td>") or find(s, "<td>lr</td><td>0.0002</td>"))
    spec.raises(function() report.html(dir, {config = "absent.json"}) end, "report.html", "absent.json")
  end)
  it("names the problem in a bad spec", function()
    spec.raises(function() report.html(nil, {}) end, "run folder")
    spec.raises(function() report.html(dir, {sections = {{table = {rows = {}}}}}) end, "section 1", "columns")
    spec.raises(function() report.markdown(dir, {sections = {{table = {columns = {"a"}, rows = {{1, 2}}}}}}) end,
      "row 1 has 2 cells for 1 columns")
  end)
end)

for i = #made, 1, -1 do os.remove(made[i]) end
os.remove(dir)
