-- MultiheadAttention, TransformerEncoderLayer (post-LN by default, applicable k times with
-- shared weights), SinusoidalPositionalEncoding, GaussianFourierProjection.
local T = require 'tdrl'
local class = require 'tdrl.class'
local Module = require('tdrl.nn.module').Module
local init = require 'tdrl.nn.initializers'
local F = require 'tdrl.nn.functional'
local U = require 'tdrl.nn.layers.util'
local Linear = require('tdrl.nn.layers.linear').Linear
local act = require 'tdrl.nn.layers.activation'
local norm = require 'tdrl.nn.layers.norm'

local M = {}

--- MultiheadAttention(embed_dim, num_heads [, {dropout = 0, bias = true, batch_first = false, generator=}])
--- PyTorch's parameters: in_proj_weight (3E, E) (Xavier uniform), in_proj_bias (3E) (zeros),
--- out_proj.weight (E, E) (Linear's default), out_proj.bias (zeros). Sequence-first (L, N, E) by
--- default, as PyTorch: ported code that feeds (L, N, E) must not be read as (N, L, E).
local MHA = class('MultiheadAttention', Module)
M.MultiheadAttention = MHA
function MHA:__init(E, H, ...)
  Module.__init(self)
  local o = U.args({"dropout", "bias", layer = "MultiheadAttention", options = {"batch_first"}}, ...)
  if math.type(E) ~= "integer" or E < 1 or math.type(H) ~= "integer" or H < 1 then
    error(string.format("MultiheadAttention: embed_dim %s and num_heads %s must be positive integers", tostring(E),
      tostring(H)), 2)
  end
  if E % H ~= 0 then error(string.format("MultiheadAttention: embed_dim %d is not divisible by %d heads", E, H), 2) end
  self.embed_dim, self.num_heads, self.head_dim = E, H, E // H
  self.dropout = o.dropout or 0
  self.batch_first = o.batch_first == true
  self.generator = o.generator
  self:register_parameter("in_proj_weight", T.empty(3 * E, E))
  self:register_parameter("in_proj_bias", o.bias ~= false and T.zeros(3 * E) or nil)
  self.out_proj = Linear(E, E, {bias = o.bias ~= false, generator = o.generator})
  init.xavier_uniform_(self.in_proj_weight, {generator = o.generator})
  if self.out_proj.bias then init.zeros_(self.out_proj.bias) end
end
function MHA:extra_repr()
  local s = string.format("%d, heads=%d", self.embed_dim, self.num_heads)
  if self.dropout > 0 then s = s .. ", dropout=" .. self.dropout end
  if self.batch_first then s = s .. ", batch_first" end
  return s
end

local function check3(m, x, what)
  if x:dim() ~= 3 or x:size(3) ~= m.embed_dim then
    U.fail(m, "%s must be %s with %d features, got shape %s", what, m.batch_first and "(N, L, E)" or "(L, N, E)",
      m.embed_dim, U.shape(x))
  end
end

--- forward(query, key, value [, {key_padding_mask = (N, S), attn_mask = (L, S) or (N*heads, L, S),
---   need_weights = true, average_attn_weights = true}])
--- -> output (L, N, E) ((N, L, E) with batch_first), weights (N, L, S) head-averaged or
--- (N, heads, L, S); nil without need_weights.
--- Masks as PyTorch's: an int64 mask (PyTorch's bool) masks out its nonzero entries; a float32
--- mask, attn_mask or key_padding_mask, is added to the scores. A comparison such as idx:eq(pad)
--- gives a float 0 / 1 tensor: take :long() of it for a boolean mask.
function MHA:forward(query, key, value, opts)
  key, value = key or query, value or key or query
  opts = opts or {}
  local unbatched = query:dim() == 2
  if unbatched then query, key, value = query:unsqueeze(1), key:unsqueeze(1), value:unsqueeze(1) end
  check3(self, query, "query"); check3(self, key, "key"); check3(self, value, "value")
  if not self.batch_first then
    query, key, value = query:transpose(1, 2), key:transpose(1, 2), value:transpose(1, 2)
  end
  local N, L, S = query:size(1), query:size(2), key:size(2)
  local E, Hh, hd = self.embed_dim, self.num_heads, self.head_dim
  if key:size(1) ~= N or value:size(1) ~= N or value:size(2) ~= S then
    U.fail(self, "query %s, key %s and value %s do not match", U.shape(query), U.shape(key), U.shape(value))
  end
  local W, B = self.in_proj_weight, self.in_proj_bias
  local q, k, v
  if rawequal(query, key) and rawequal(key, value) then -- self-attention: one projection GEMM
    local qkv = F.linear(query, W, B)
    q, k, v = qkv:narrow(3, 1, E), qkv:narrow(3, E + 1, E), qkv:narrow(3, 2 * E + 1, E)
  elseif rawequal(key, value) then -- some queries of a sequence: keys and values in one GEMM
    q = F.linear(query, W:narrow(1, 1, E), B and B:narrow(1, 1, E) or nil)
    local kv = F.linear(key, W:narrow(1, E + 1, 2 * E), B and B:narrow(1, E + 1, 2 * E) or nil)
    k, v = kv:narrow(3, 1, E), kv:narrow(3, E + 1, E)
  else
    local function part(i) return W:narrow(1, i * E + 1, E), B and B:narrow(1, i * E + 1, E) or nil end
    local wq, bq = part(0)
    local wk, bk = part(1)
    local wv, bv = part(2)
    q, k, v = F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)
  end
  local function heads(t, n) return t:reshape(N, n, Hh, hd):transpose(2, 3) end -- (N, heads, n, hd)
  q, k, v = heads(q, L), heads(k, S), heads(v, S)
  local am = opts.attn_mask
  if am then
    if am:dim() == 2 then
      if am:size(1) ~= L or am:size(2) ~= S then
        U.fail(self, "attn_mask of shape %s, expected %dx%d", U.shape(am), L, S)
      end
    elseif am:dim() == 3 and am:size(1) == N * Hh and am:size(2) == L and am:size(3) == S then
      am = am:reshape(N, Hh, L, S)
    else
      U.fail(self, "attn_mask of shape %s, expected %dx%d or %dx%dx%d", U.shape(am), L, S, N * Hh, L, S)
    end
  end
  local kpm = opts.key_padding_mask
  if kpm and (kpm:dim() ~= 2 or kpm:size(1) ~= N or kpm:size(2) ~= S) then
    U.fail(self, "key_padding_mask of shape %s, expected %dx%d", U.shape(kpm), N, S)
  end
  local ok, out, a = pcall(F.scaled_dot_product_attention, q, k, v,
    {attn_mask = am, key_padding_mask = kpm, scale = 1 / math.sqrt(hd), key_padding_additive = opts.key_padding_additive ~= false})
  if not ok then U.fail(self, "%s", tostring(out)) end
  if self.dropout > 0 and self.training then
    a = F.dropout(a, self.dropout, true, self.generator)
    out = a:matmul(v)
  end
  out = out:transpose(2, 3):reshape(N, L, E)
  out = self.out_proj(out)
  if not self.batch_first then out = out:transpose(1, 2) end
  local weights
  if opts.need_weights ~= false then
    weights = a
    if opts.average_attn_weights ~= false then weights = a:mean(2) end
    if unbatched then weights = weights:squeeze(1) end
  end
  if unbatched then out = out:squeeze(1) end
  return out, weights
end

--- TransformerEncoderLayer(d_model, nhead [, {dim_feedforward = 2048, dropout = 0.1,
---   activation = 'relu' | 'gelu', layer_norm_eps = 1e-5, batch_first = false, norm_first = false,
---   n_apply = 1, generator=}])
--- Post-LN (PyTorch's default): x = norm1(x + drop1(attn(x))); x = norm2(x + drop2(ffn(x))),
--- ffn = linear2(dropout(act(linear1(x)))). n_apply > 1 applies the same layer (shared weights)
--- that many times. PyTorch's child names: self_attn, linear1, dropout, linear2, norm1, norm2,
--- dropout1, dropout2. Sequence-first (L, N, d) by default, as PyTorch.
local TEL = class('TransformerEncoderLayer', Module)
M.TransformerEncoderLayer = TEL
function TEL:__init(d, nhead, ...)
  Module.__init(self)
  local o = U.args({"dim_feedforward", "dropout", "activation", layer = "TransformerEncoderLayer",
    options = {"norm_first", "n_apply", "batch_first", "layer_norm_eps"}}, ...)
  local ff, p = o.dim_feedforward or 2048, o.dropout or 0.1
  U.check_ints("TransformerEncoderLayer", "d_model", d, "nhead", nhead, "dim_feedforward", ff)
  local g = o.generator
  self.d_model, self.nhead, self.dim_feedforward, self.p = d, nhead, ff, p
  self.norm_first = o.norm_first == true
  self.n_apply = o.n_apply or 1
  self.activation = o.activation or "relu"
  if self.activation ~= "relu" and self.activation ~= "gelu" then
    error("TransformerEncoderLayer: activation must be 'relu' or 'gelu'", 2)
  end
  self.self_attn = MHA(d, nhead, {dropout = p, batch_first = o.batch_first == true, generator = g})
  self.linear1 = Linear(d, ff, {generator = g})
  self.dropout = act.Dropout(p, {generator = g})
  self.linear2 = Linear(ff, d, {generator = g})
  self.norm1 = norm.LayerNorm(d, {eps = o.layer_norm_eps or 1e-5})
  self.norm2 = norm.LayerNorm(d, {eps = o.layer_norm_eps or 1e-5})
  self.dropout1 = act.Dropout(p, {generator = g})
  self.dropout2 = act.Dropout(p, {generator = g})
end
function TEL:extra_repr()
  local s = string.format("%d, heads=%d, ff=%d, dropout=%g", self.d_model, self.nhead, self.dim_feedforward, self.p)
  if self.norm_first then s = s .. ", pre-LN" end
  if self.n_apply ~= 1 then s = s .. ", applied " .. self.n_apply .. "x" end
  return s
end

function TEL:_ff(x)
  local h = self.linear1(x)
  h = self.activation == "gelu" and h:gelu() or h:relu()
  return self.dropout2(self.linear2(self.dropout(h)))
end

--- forward(src [, {src_mask=, src_key_padding_mask=, n_apply=, need_weights = false,
---   average_attn_weights = true, last_rows=}]) -> output[, attention weights of the last application]
--- last_rows = k: the last application computes only the last k positions' outputs (queries),
--- from all positions' keys and values; the output is then (N, k, d) ((k, N, d) sequence-first)
--- and the weights' query dimension k. The same values as the full output's last k rows: for a
--- reader of one token (a CLS) the other rows of the last application are work for nothing.
function TEL:forward(x, opts)
  opts = opts or {}
  local aopts = {attn_mask = opts.src_mask, key_padding_mask = opts.src_key_padding_mask,
                 need_weights = opts.need_weights == true, average_attn_weights = opts.average_attn_weights}
  local w
  local n_apply, rows = opts.n_apply or self.n_apply, opts.last_rows
  local sd = self.self_attn.batch_first and 2 or 1 -- the sequence dimension
  for i = 1, n_apply do
    local function last(t) return t:narrow(sd, t:size(sd) - rows + 1, rows) end
    local ao = aopts
    if rows and i == n_apply then
      local am = aopts.attn_mask
      if am then am = am:narrow(am:dim() - 1, am:size(am:dim() - 1) - rows + 1, rows) end
      ao = {attn_mask = am, key_padding_mask = aopts.key_padding_mask, need_weights = aopts.need_weights,
            average_attn_weights = aopts.average_attn_weights}
    end
    if self.norm_first then
      local h = self.norm1(x)
      local a
      if ao ~= aopts then
        a, w = self.self_attn(last(h), h, h, ao)
        x = last(x)
      else
        a, w = self.self_attn(h, h, h, ao)
      end
      x = x + self.dropout1(a)
      x = x + self:_ff(self.norm2(x))
    else
      local a
      if ao ~= aopts then
        local q = last(x)
        a, w = self.self_attn(q, x, x, ao)
        x = q
      else
        a, w = self.self_attn(x, x, x, ao)
      end
      x = self.norm1(x + self.dropout1(a))
      x = self.norm2(x + self:_ff(x))
    end
  end
  if opts.need_weights then return x, w end
  return x
end

--- sinusoidal_encoding(n, d) -> (n, d): [:, 2i] = sin(pos / 10000^(2i/d)), [:, 2i+1] = cos(...)
function M.sinusoidal_encoding(n, d)
  if d % 2 ~= 0 then error("sinusoidal_encoding: the width must be even, got " .. d, 2) end
  local pos = T.arange(0, n):view(n, 1)
  local div = (T.arange(0, d, 2) * (-math.log(10000.0) / d)):exp()
  local arg = pos * div
  return T.stack({arg:sin(), arg:cos()}, 3):reshape(n, d)
end

--- SinusoidalPositionalEncoding(d_model [, max_len = 5000] [, {persistent = false}]):
--- forward(x (N, L, d)) -> x + pe[1..L] (by token index)
local PE = class('SinusoidalPositionalEncoding', Module)
M.SinusoidalPositionalEncoding = PE
function PE:__init(d, ...)
  Module.__init(self)
  local o = U.args({"max_len", layer = "SinusoidalPositionalEncoding", options = {"persistent"}}, ...)
  U.check_ints("SinusoidalPositionalEncoding", "d_model", d, "max_len", o.max_len or 5000)
  self.d_model, self.max_len = d, o.max_len or 5000
  self:register_buffer("pe", M.sinusoidal_encoding(self.max_len, d), o.persistent == true)
end
function PE:extra_repr() return string.format("%d, max_len=%d", self.d_model, self.max_len) end
function PE:forward(x)
  local L = x:size(-2)
  if x:size(-1) ~= self.d_model or L > self.max_len then
    U.fail(self, "input of shape %s: expected (..., L <= %d, %d)", U.shape(x), self.max_len, self.d_model)
  end
  return x + self.pe:narrow(1, 1, L)
end

--- GaussianFourierProjection(embedding_size = 256 [, scale = 1] [, {generator=}]):
--- fixed W ~ N(0, scale^2) (a frozen parameter, as in the reference); forward(x (N)) ->
--- [sin(2 pi W x), cos(2 pi W x)] (N, 2 embedding_size)
local GFP = class('GaussianFourierProjection', Module)
M.GaussianFourierProjection = GFP
function GFP:__init(...)
  Module.__init(self)
  local o = U.args({"embedding_size", "scale", layer = "GaussianFourierProjection"}, ...)
  self.embedding_size, self.scale = o.embedding_size or 256, o.scale or 1.0
  U.check_ints("GaussianFourierProjection", "embedding_size", self.embedding_size)
  if type(self.scale) ~= "number" then error("GaussianFourierProjection: scale must be a number, got " .. tostring(self.scale), 2) end
  local W = T.randn({self.embedding_size}, o.generator or {}) * self.scale
  self:register_parameter("W", W, false)
end
function GFP:extra_repr() return string.format("%d, scale=%g", self.embedding_size, self.scale) end
function GFP:forward(x)
  if x:dim() ~= 1 then U.fail(self, "expected a vector of N values, got shape %s", U.shape(x)) end
  local p = x:view(-1, 1) * self.W:view(1, -1) * (2 * math.pi)
  return T.cat({p:sin(), p:cos()}, 2)
end

return M
