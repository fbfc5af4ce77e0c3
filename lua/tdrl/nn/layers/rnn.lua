-- GRUCell and GRU (PyTorch's gate order r, z, n and parameter names).
local T = require 'tdrl'
local class = require 'tdrl.class'
local Module = require('tdrl.nn.module').Module
local init = require 'tdrl.nn.initializers'
local F = require 'tdrl.nn.functional'
local U = require 'tdrl.nn.layers.util'

local M = {}

local function run(m, fn, ...)
  local ok, r = pcall(fn, ...)
  if not ok then U.fail(m, "%s", tostring(r)) end
  return r
end

--- GRUCell(input_size, hidden_size [, bias = true] [, {generator=}])
--- weight_ih (3H, in), weight_hh (3H, H), bias_ih, bias_hh (3H), all ~ U(+-1/sqrt(H))
local GRUCell = class('GRUCell', Module)
M.GRUCell = GRUCell
function GRUCell:__init(nin, H, ...)
  Module.__init(self)
  local o = U.args({"bias", layer = "GRUCell"}, ...)
  U.check_ints("GRUCell", "input_size", nin, "hidden_size", H)
  self.input_size, self.hidden_size = nin, H
  self:register_parameter("weight_ih", T.empty(3 * H, nin))
  self:register_parameter("weight_hh", T.empty(3 * H, H))
  self:register_parameter("bias_ih", o.bias ~= false and T.empty(3 * H) or nil)
  self:register_parameter("bias_hh", o.bias ~= false and T.empty(3 * H) or nil)
  local k = 1 / math.sqrt(H)
  for _, name in ipairs({"weight_ih", "weight_hh", "bias_ih", "bias_hh"}) do
    if self[name] then init.uniform_(self[name], {a = -k, b = k, generator = o.generator}) end
  end
end
function GRUCell:extra_repr()
  return string.format("%d -> %d%s", self.input_size, self.hidden_size, self.bias_ih and "" or ", no bias")
end

--- forward(x (N, in) or (in), h (N, H) or nil for zeros) -> h' (N, H)
function GRUCell:forward(x, h)
  local unbatched = x:dim() == 1
  if unbatched then x = x:unsqueeze(1) end
  if x:dim() ~= 2 or x:size(2) ~= self.input_size then
    U.fail(self, "expected input (N, %d), got shape %s", self.input_size, U.shape(x))
  end
  if h == nil then
    h = T.zeros(x:size(1), self.hidden_size)
  else
    if unbatched and h:dim() == 1 then h = h:unsqueeze(1) end
    if h:dim() ~= 2 or h:size(1) ~= x:size(1) or h:size(2) ~= self.hidden_size then
      U.fail(self, "hidden state of shape %s does not match input %s (expected %dx%d)", U.shape(h), U.shape(x),
        x:size(1), self.hidden_size)
    end
  end
  local r = run(self, F.gru_cell, x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
  if unbatched then r = r:squeeze(1) end
  return r
end

--- GRU(input_size, hidden_size [, num_layers = 1] [, {bias=, batch_first = false, dropout = 0, generator=}])
--- parameters weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, ... (unidirectional)
local GRU = class('GRU', Module)
M.GRU = GRU
function GRU:__init(nin, H, ...)
  Module.__init(self)
  local o = U.args({"num_layers", layer = "GRU", options = {"bidirectional", "batch_first", "dropout", "bias"}}, ...)
  U.check_ints("GRU", "input_size", nin, "hidden_size", H, "num_layers", o.num_layers or 1)
  if o.bidirectional then error("GRU: bidirectional is not supported", 2) end
  self.input_size, self.hidden_size = nin, H
  self.num_layers = o.num_layers or 1
  self.batch_first = o.batch_first == true
  self.dropout = o.dropout or 0
  self.generator = o.generator
  local k = 1 / math.sqrt(H)
  for l = 0, self.num_layers - 1 do
    local n_in = l == 0 and nin or H
    local names = {"weight_ih_l" .. l, "weight_hh_l" .. l, "bias_ih_l" .. l, "bias_hh_l" .. l}
    self:register_parameter(names[1], T.empty(3 * H, n_in))
    self:register_parameter(names[2], T.empty(3 * H, H))
    self:register_parameter(names[3], o.bias ~= false and T.empty(3 * H) or nil)
    self:register_parameter(names[4], o.bias ~= false and T.empty(3 * H) or nil)
  end
  for _, p in ipairs(self:parameters()) do init.uniform_(p, {a = -k, b = k, generator = o.generator}) end
end
function GRU:extra_repr()
  local s = string.format("%d -> %d, layers=%d", self.input_size, self.hidden_size, self.num_layers)
  if self.batch_first then s = s .. ", batch_first" end
  if self.dropout > 0 then s = s .. ", dropout=" .. self.dropout end
  return s
end

--- forward(x (N, L, in) if batch_first else (L, N, in); or (L, in) unbatched, h0 (layers, N, H) or nil)
--- -> output (N, L, H) / (L, N, H), h_n (layers, N, H)
function GRU:forward(x, h0)
  local unbatched = x:dim() == 2
  if unbatched then x = x:unsqueeze(self.batch_first and 1 or 2) end
  if x:dim() ~= 3 or x:size(3) ~= self.input_size then
    U.fail(self, "expected input %s with %d features, got shape %s", self.batch_first and "(N, L, in)" or "(L, N, in)",
      self.input_size, U.shape(x))
  end
  if not self.batch_first then x = x:transpose(1, 2) end
  local N, L = x:size(1), x:size(2)
  if h0 ~= nil then
    if unbatched and h0:dim() == 2 then h0 = h0:unsqueeze(2) end
    if h0:dim() ~= 3 or h0:size(1) ~= self.num_layers or h0:size(2) ~= N or h0:size(3) ~= self.hidden_size then
      U.fail(self, "initial state of shape %s, expected %dx%dx%d", U.shape(h0), self.num_layers, N, self.hidden_size)
    end
  end
  local layer_in = x
  local finals = {}
  for l = 0, self.num_layers - 1 do
    local wih, whh = self["weight_ih_l" .. l], self["weight_hh_l" .. l]
    local bih, bhh = self["bias_ih_l" .. l], self["bias_hh_l" .. l]
    local h = h0 and h0:select(1, l + 1) or T.zeros(N, self.hidden_size)
    local outs = {}
    for t = 1, L do
      h = run(self, F.gru_cell, layer_in:select(2, t), h, wih, whh, bih, bhh)
      outs[t] = h
    end
    finals[l + 1] = h
    layer_in = T.stack(outs, 2)
    if self.dropout > 0 and self.training and l < self.num_layers - 1 then
      layer_in = F.dropout(layer_in, self.dropout, true, self.generator)
    end
  end
  local out, hn = layer_in, T.stack(finals, 1)
  if not self.batch_first then out = out:transpose(1, 2) end
  if unbatched then
    out = out:squeeze(self.batch_first and 1 or 2)
    hn = hn:squeeze(2)
  end
  return out, hn
end

return M
