-- tdrl.data: the data set API, Synthetic and Colored-MNIST label structure, splits, loaders,
-- the cache, grids, and every reader on small files written here (damaged ones included).
-- Checks on the real MNIST / Fashion-MNIST files run only when those are present (a note is
-- printed otherwise); nothing here needs the network.
local T = require 'tdrl'
local data = require 'tdrl.data'
local C = T._data
local U = data.util
local eq, near, raises, truthy = spec.eq, spec.near, spec.raises, spec.truthy

-- a fresh temporary folder for the files of this spec
local tmp = os.tmpname()
os.remove(tmp)
C.mkdir_p(tmp)
local function path(name) return tmp .. "/" .. name end
local function write(p, s)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
end
local function read(p)
  local f = assert(io.open(p, "rb"))
  local s = f:read("a")
  f:close()
  return s
end
-- the cache goes to the temporary folder too
data.cache.dir = function() return tmp .. "/cache" end

local function same(a, b) return spec.maxdiff(a, b) == 0 end

describe("synthetic", function()
  local tr, va, te = data.synthetic()
  it("object_scale magnifies the object, keeps the labels, and names a bad scale", function()
    local a = data.synthetic{split = "test", n_test = 40}
    local b = data.synthetic{split = "test", n_test = 40, object_scale = 2}
    local xa, la = a:tensors()
    local xb, lb = b:tensors()
    eq((la.shape - lb.shape):abs():sum():item(), 0)
    -- the background's share of the scene falls with the object's size
    local function off_bg(x) return (x - x:narrow(3, 1, 1):narrow(4, 1, 1)):abs():sum(2):gt(0):float():mean():item() end
    truthy(off_bg(xb) > 3 * off_bg(xa), string.format("object share %.3f vs %.3f", off_bg(xb), off_bg(xa)))
    local ok, err = pcall(data.synthetic, {object_scale = 4})
    truthy(not ok and err:find("object scale 4", 1, true), err)
    local P = require 'tdrl.paper'
    local _, _, te2 = P.datasets("synthetic_x2", {n_test = 40})
    eq(te2:len(), 40)
    ok, err = pcall(P.datasets, "synthetic_x5")
    truthy(not ok and err:find("unknown dataset", 1, true), err)
  end)
  it("has the default sizes 3,500 / 500 / 1,000 of 3x32x32", function()
    eq(#tr, 3500); eq(#va, 500); eq(#te, 1000)
    eq(tr.channels, 3); eq(tr.height, 32); eq(tr.width, 32)
  end)
  it("has the four tasks with 9 / 9 / 16 / 5 classes", function()
    eq(table.concat(tr.tasks, ","), "background,foreground,location,shape")
    eq(tr.classes.background, 9); eq(tr.classes.foreground, 9)
    eq(tr.classes.location, 16); eq(tr.classes.shape, 5)
  end)
  it("never paints the foreground in the background colour", function()
    for _, ds in ipairs({tr, va, te}) do
      eq(ds:labels("background"):eq(ds:labels("foreground")):sum():item(), 0)
    end
  end)
  it("uses every class of every task", function()
    for _, t in ipairs(tr.tasks) do
      local counts, total = tr:class_counts(t), 0
      for c = 0, tr.classes[t] - 1 do
        truthy(counts[c] > 0, t .. " class " .. c .. " never occurs")
        total = total + counts[c]
      end
      eq(total, #tr)
    end
  end)
  it("gives the same bytes for the same seed and other bytes for another", function()
    local a = data.synthetic{split = "trainval", seed = 3}
    local b = data.synthetic{split = "trainval", seed = 3}
    local c = data.synthetic{split = "trainval", seed = 4}
    local xa, ya = a:tensors()
    local xb, yb = b:tensors()
    local xc = c:tensors()
    truthy(same(xa, xb), "images differ for the same seed")
    truthy(same(ya.shape, yb.shape), "labels differ for the same seed")
    truthy(not same(xa, xc), "another seed gave the same images")
  end)
  it("split = 'trainval' and 'test' take any n; the train / val split names a too large n_val", function()
    local small = data.synthetic{split = "trainval", n = 300}
    eq(#small, 300)
    eq(#data.synthetic{split = "test", n = 100, n_test = 50}, 50)
    local ok, err = pcall(data.synthetic, {split = "train", n = 300})
    truthy(not ok and err:find("n_val 500 exceeds n 300", 1, true) and err:find("trainval", 1, true), err)
    local t2, v2 = data.synthetic{n = 300, n_val = 100}
    eq(#t2, 200); eq(#v2, 100)
  end)
  it("splits train / val disjointly out of one generated set, test apart", function()
    local all = data.synthetic{split = "trainval"}
    local seen = {}
    for _, ds in ipairs({tr, va}) do
      for _, id in ipairs(ds:source_ids():tolist()) do
        truthy(not seen[id], "sample " .. id .. " in two splits"); seen[id] = true
      end
    end
    eq(#all, 4000)
    local xt = te:tensors()
    local xa = all:tensors()
    truthy(not same(xt:narrow(1, 1, 10), xa:narrow(1, 1, 10)), "test set repeats the training scenes")
  end)
  it("returns one sample as (C, H, W) in [0, 1] with a table of labels", function()
    local x, y = tr:get(1)
    eq(x:dim(), 3); eq(x:size(1), 3)
    truthy(x:min():item() >= 0 and x:max():item() <= 1)
    eq(math.type(y.shape), "integer")
    local xb, yb = tr:batch({1})
    truthy(same(xb[1], x))
    eq(yb.location:get(1), y.location)
  end)
  it("draws shapes whose masks differ", function()
    local names = C.shapes()
    eq(#names, 5)
    for s = 0, 4 do
      for u = s + 1, 4 do
        local d = (C.shape_mask(s) - C.shape_mask(u)):abs():sum():item()
        truthy(d >= 10, names[s + 1] .. " and " .. names[u + 1] .. " differ in only " .. d .. " pixels")
      end
    end
  end)
  it("draws the object inside its location's cell", function()
    local x, y = tr:batch({1, 2, 3, 4, 5, 6, 7, 8})
    for b = 1, 8 do
      local img = x[b]
      local bgc = img[{{}, 1, 1}]:view(3, 1, 1)
      local loc = y.location:get(b)
      -- if the cell is not (0, 0) the corner pixel is background; mask of non-background pixels
      local diff = (img - bgc):abs():sum(1):gt(0):float()
      local r, c = loc // 4, loc % 4
      local inside = diff:narrow(1, r * 8 + 1, 8):narrow(2, c * 8 + 1, 8):sum():item()
      eq(diff:sum():item(), inside, "object pixels outside the cell of sample " .. b)
      truthy(inside >= 13, "no object drawn in sample " .. b)
    end
  end)
  it("rejects unknown options and splits", function()
    raises(function() data.synthetic{splt = "train"} end, "unknown option 'splt'")
    raises(function() data.synthetic{split = "dev"} end, "split must be")
  end)
end)

describe("dataset API", function()
  local ds = data.synthetic{split = "trainval", n = 100, n_val = 10}
  it("subsets by Lua positions (from 1) and int64 positions (from 0)", function()
    local a = ds:subset({3, 1, 2})
    local b = ds:subset(T.tensor({2, 0, 1}, "int64"))
    eq(#a, 3)
    truthy(same(a:tensors(), b:tensors()))
    truthy(same(a:get(2), ds:get(1)))
    local aa = a:subset({1})
    truthy(same(aa:get(1), ds:get(3)), "subset of a subset")
    raises(function() ds:subset({0}) end, "out of range 1..100")
    raises(function() ds:get(101) end, "out of range 1..100")
    raises(function() ds:batch(T.tensor({100}, "int64")) end, "position 100 out of range 0..99")
  end)
  it("splits deterministically by counts or fractions", function()
    local a1, b1 = ds:split({70, 30}, 5)
    local a2, b2 = ds:split({0.7, 0.3}, 5)
    eq(#a1, 70); eq(#b1, 30); eq(#a2, 70)
    truthy(same(a1:source_ids(), a2:source_ids()))
    local c1 = ds:split({70, 30}, 6)
    truthy(not same(a1:source_ids(), c1:source_ids()), "another seed gave the same split")
    local inorder = ds:split({50, 50}, false)
    truthy(same(inorder:source_ids(), T.arange(0, 50, 1, "int64")))
    raises(function() ds:split({70, 20}) end, "sum to 90")
  end)
  it("normalises per channel, computed or given", function()
    local n = ds:normalize()
    local x = n:tensors()
    for c = 1, 3 do
      local xc = x:select(2, c)
      near(xc:mean():item(), 0, 1e-4)
      near(xc:var(nil, false, 0):item(), 1, 1e-3)
    end
    local g = ds:normalize({0.5, 0.5, 0.5}, {0.25, 0.25, 0.25})
    local raw = ds:get(7)
    spec.tensor_near(g:get(7), (raw - 0.5) / 0.25, 1e-5)
    truthy(same(g:raw():get(7), raw))
    raises(function() ds:normalize({0.5}, {1}) end, "need 3 values")
    raises(function() ds:normalize({0, 0, 0}, {1, 0, 1}) end, "std[2]")
  end)
  it("computes stats over its own view", function()
    local m, s = ds:stats()
    local x = ds:tensors()
    near(m[2], x:select(2, 2):mean():item(), 1e-5)
    near(s[2], x:select(2, 2):std(nil, false, 0):item(), 1e-4)
  end)
  it("names unknown tasks", function()
    raises(function() ds:labels("colour") end, "unknown task 'colour'", "background")
  end)
  it("prints a summary", function()
    truthy(tostring(ds):find("100 images 3x32x32", 1, true))
  end)
  it("builds from tensors and saves / reopens instantly", function()
    local imgs = T.rand(6, 1, 4, 5)
    local ft = data.from_tensors(imgs, {{"a", T.tensor({0, 1, 2, 0, 1, 2}, "int64")}, {"b", T.tensor({1, 1, 0, 0, 1, 1}, "int64")}})
    eq(table.concat(ft.tasks, ","), "a,b"); eq(ft.classes.a, 3)
    spec.tensor_near(ft:tensors(), imgs, 0.5 / 255 + 1e-6)
    local sub = ft:subset({6, 2})
    sub:save(path("ft.safetensors"))
    local back = data.open(path("ft.safetensors"))
    eq(#back, 2); eq(table.concat(back.tasks, ","), "a,b"); eq(back.classes.a, 3)
    truthy(same(back:tensors(), sub:tensors()))
    truthy(same(back:labels("b"), T.tensor({1, 1}, "int64")))
  end)
end)

describe("loader", function()
  local ds = data.synthetic{split = "trainval", n = 103, n_val = 3}
  it("yields (B, C, H, W) and int64 label tensors, the last batch partial", function()
    local l = data.loader(ds, {batch_size = 10})
    eq(#l, 11)
    local n, last = 0, nil
    for x, y in l:iter() do
      n = n + 1
      eq(x:dim(), 4); eq(x:size(2), 3)
      eq(y.shape:dtype(), "int64"); eq(y.shape:size(1), x:size(1))
      last = x:size(1)
    end
    eq(n, 11); eq(last, 3)
  end)
  it("drops the last partial batch with drop_last", function()
    local l = data.loader(ds, {batch_size = 10, drop_last = true})
    eq(#l, 10)
    local n = 0
    for x in l:iter() do eq(x:size(1), 10); n = n + 1 end
    eq(n, 10)
  end)
  it("visits every sample once per epoch, in order without shuffle", function()
    local l = data.loader(ds, {batch_size = 7})
    local got = {}
    for _, y in l:iter() do
      for _, v in ipairs(y.location:tolist()) do got[#got + 1] = v end
    end
    eq(#got, 103)
    local want = ds:labels("location"):tolist()
    for i = 1, 103 do eq(got[i], want[i]) end
  end)
  it("shuffles by the seed: same seed same order, epochs differ, all samples seen", function()
    local function epoch_ids(l)
      local xs = {}
      for x in l:iter() do xs[#xs + 1] = x end
      return T.cat(xs, 1)
    end
    local a = data.loader(ds, {batch_size = 16, shuffle = true, seed = 9})
    local b = data.loader(ds, {batch_size = 16, shuffle = true, seed = 9})
    local c = data.loader(ds, {batch_size = 16, shuffle = true, seed = 10})
    local a1, b1, c1 = epoch_ids(a), epoch_ids(b), epoch_ids(c)
    truthy(same(a1, b1), "same seed, other order")
    truthy(not same(a1, c1), "other seed, same order")
    local a2 = epoch_ids(a)
    truthy(not same(a1, a2), "two epochs in the same order")
    -- a permutation of the data set: same multiset of images
    local all = ds:tensors()
    near(a1:sum():item(), all:sum():item(), 1e-3)
    local perm = T.randperm(#ds, T.Generator(U.mix(9, 1)))
    truthy(same(a1, all:index_select(1, perm)), "epoch 1 is not randperm(n, Generator(mix(seed, 1)))")
    a:set_epoch(1)
    truthy(same(epoch_ids(a), a1), "set_epoch(1) does not replay epoch 1")
  end)
  it("gives the same batches with and without the prefetch thread", function()
    local a = data.loader(ds, {batch_size = 8, shuffle = true, seed = 1, prefetch = true})
    local b = data.loader(ds, {batch_size = 8, shuffle = true, seed = 1, prefetch = false})
    local ia, ib = a:iter(), b:iter()
    for _ = 1, #a do
      local xa, ya = ia()
      local xb, yb = ib()
      truthy(same(xa, xb)); truthy(same(ya.background, yb.background))
    end
    eq(ia(), nil)
  end)
  it("streams across epochs with next()", function()
    local l = data.loader(ds, {batch_size = 50, drop_last = true})
    for _ = 1, 5 do
      local x = l:next()
      eq(x:size(1), 50)
    end
    eq(l.epoch, 3)
  end)
  it("applies the data set's normalisation", function()
    local n = ds:normalize({0.5, 0.5, 0.5}, {0.5, 0.5, 0.5})
    local x = data.loader(n, {batch_size = 4}):next()
    spec.tensor_near(x, n:batch({1, 2, 3, 4}), 1e-6)
    truthy(x:min():item() < 0)
  end)
  it("follows a subset's view", function()
    local sub = ds:subset({5, 9})
    local x, y = data.loader(sub, {batch_size = 2}):next()
    truthy(same(x, ds:batch({5, 9})))
    eq(y.shape:get(2), ds:labels("shape"):get(9))
  end)
  it("rejects bad options", function()
    raises(function() data.loader(ds, {batchsize = 3}) end, "unknown option 'batchsize'")
    raises(function() data.loader(ds, {batch_size = 0}) end, "batch_size must be a positive integer")
    raises(function() data.loader({}, {}) end, "expects a data set")
  end)
end)

describe("colored-mnist", function()
  -- grey stand-in digits (the real ones are checked below when present)
  local function digits(n, seed)
    local g = T.Generator(seed)
    local imgs = T.rand(n, 1, 28, 28, {generator = g})
    local lab = T.randint(0, 10, {n}, {generator = g})
    return data.from_tensors(imgs, {{"digit", lab}}, {classes = {digit = 10}})
  end
  local fake = {train = digits(300, 1), test = digits(50, 2)}
  local tr, va, te = data.cmnist{digits = fake, n_val = 60}
  it("has the splits, tasks and classes", function()
    eq(#tr, 240); eq(#va, 60); eq(#te, 50)
    eq(table.concat(tr.tasks, ","), "digit,background,foreground")
    eq(tr.classes.digit, 10); eq(tr.classes.background, 9); eq(tr.classes.foreground, 9)
    eq(tr.height, 32); eq(tr.channels, 3)
  end)
  it("never colours the digit like its background", function()
    for _, ds in ipairs({tr, va, te}) do
      eq(ds:labels("background"):eq(ds:labels("foreground")):sum():item(), 0)
    end
  end)
  it("keeps the digit labels and pads with the background colour", function()
    local all = data.cmnist{digits = fake, split = "trainval"}
    truthy(same(all:labels("digit"), fake.train:labels("digit")))
    local palette = C.palette()
    local x, y = all:get(5)
    local bg = palette[y.background + 1]
    for c = 1, 3 do
      near(x[{c, 1, 1}]:item(), bg[c] / 255, 1e-6)
      near(x[{c, 32, 32}]:item(), bg[c] / 255, 1e-6)
    end
  end)
  it("colours deterministically for a seed", function()
    local a = data.cmnist{digits = fake, split = "test", seed = 4}
    local b = data.cmnist{digits = fake, split = "test", seed = 4}
    local c = data.cmnist{digits = fake, split = "test", seed = 5}
    truthy(same(a:tensors(), b:tensors()))
    truthy(not same(a:labels("background"), c:labels("background")))
  end)
end)

-- ---- readers on files written here ---------------------------------------------------------
local function idx(type_code, dims, payload)
  local h = string.pack(">BBBB", 0, 0, type_code, #dims)
  for _, d in ipairs(dims) do h = h .. string.pack(">I4", d) end
  return h .. payload
end

describe("IDX files", function()
  local px = {}
  for i = 1, 4 * 3 * 2 do px[i] = string.char((i * 11) % 256) end
  local images = idx(8, {4, 3, 2}, table.concat(px))
  local labels = idx(8, {4}, "\3\1\4\1")
  write(path("ok-images-idx3-ubyte"), images)
  write(path("ok-labels-idx1-ubyte"), labels)
  it("reads images and labels", function()
    local t = data.read_idx(path("ok-images-idx3-ubyte"))
    eq(t:dim(), 3); eq(t:size(1), 4); eq(t:get(1, 1, 2), 22)
    local src = C.idx_source(path("ok-images-idx3-ubyte"), path("ok-labels-idx1-ubyte"), 10)
    local ds = data.Dataset.new(src, {tasks = {"digit"}, classes = {10}})
    local x, y = ds:get(3)
    eq(y.digit, 4)
    near(x[{1, 1, 1}]:item(), ((12 * 11 + 11) % 256) / 255, 1e-6)
  end)
  it("names the file and the offset of a truncated file", function()
    write(path("cut.idx"), images:sub(1, #images - 3))
    raises(function() data.read_idx(path("cut.idx")) end, "cut.idx", "truncated at byte offset 37")
  end)
  it("names a wrong magic number", function()
    write(path("magic.idx"), "\0\1" .. images:sub(3))
    raises(function() data.read_idx(path("magic.idx")) end, "magic.idx", "bad magic number 0x00010803",
      "byte offset 0")
  end)
  it("names sizes that disagree", function()
    write(path("long.idx"), images .. "xyz")
    raises(function() data.read_idx(path("long.idx")) end, "long.idx", "sizes disagree")
    write(path("few-labels"), idx(8, {3}, "\1\2\3"))
    raises(function() C.idx_source(path("ok-images-idx3-ubyte"), path("few-labels"), 10) end, "sizes disagree",
      "few-labels holds 3 labels", "holds 4 images")
  end)
  it("reads MNIST-style folders through data.mnist{dir = ...} without a fetch", function()
    C.mkdir_p(path("mn"))
    write(path("mn/train-images-idx3-ubyte"), images)
    write(path("mn/train-labels-idx1-ubyte"), labels)
    write(path("mn/t10k-images-idx3-ubyte"), images)
    write(path("mn/t10k-labels-idx1-ubyte"), labels)
    local tr, te = data.mnist{dir = path("mn")}
    eq(#tr, 4); eq(#te, 4); eq(tr:get(1).shape and tr:get(1):size(2), 3)
    local again = data.mnist{dir = path("mn"), split = "train"}
    truthy(same(again:tensors(), tr:tensors()), "cached copy differs")
    truthy(U.exists(path("cache/mnist-train.safetensors")), "no cache file written")
    local f = data.fashion_mnist{dir = path("mn"), split = "test"}
    eq(#f, 4); eq(f.class_names.class[1], "T-shirt/top")
    truthy(same(f:tensors(), te:tensors()))
    raises(function() data.fashion_mnist{dir = path("nowhere")} end, "dataset-fashion-mnist")
  end)
  it("pads grey images onto a larger canvas, as RGB on request", function()
    local raw = data.mnist{dir = path("mn"), split = "train"}
    local p = data.mnist{dir = path("mn"), split = "train", pad = 6, channels = 3}
    eq(p.channels, 3); eq(p.height, 6); eq(p.width, 6)
    local x, y = p:get(2)
    eq(y.digit, raw:labels("digit"):get(2))
    truthy(same(x[{{}, {2, 4}, {3, 4}}], raw:get(2):expand(3, 3, 2)), "image not centred or not copied to RGB")
    eq(x:sum():item(), 3 * raw:get(2):sum():item())
    raises(function() p:pad(8) end, "needs a grey data set")
    raises(function() raw:pad(2) end, "H, W <= 2")
  end)
end)

describe("CIFAR binary batches", function()
  local function record(label, fill, extra)
    return (extra or "") .. string.char(label) .. string.rep(string.char(fill), 3072)
  end
  C.mkdir_p(path("c10"))
  for i = 1, 5 do write(path("c10/data_batch_" .. i .. ".bin"), record(i, i * 10) .. record(9, 1)) end
  write(path("c10/test_batch.bin"), record(0, 255))
  it("reads CIFAR-10 train and test", function()
    local tr, te = data.cifar10{dir = path("c10")}
    eq(#tr, 10); eq(#te, 1)
    eq(tr:get(3).shape and tr:labels("class"):get(3), 2)
    near(tr:get(3):max():item(), 20 / 255, 1e-6)
    eq(te:labels("class"):get(1), 0)
  end)
  it("names a truncated record", function()
    write(path("c10/data_batch_5.bin"), record(1, 1):sub(1, 3000))
    raises(function() data.cifar10{dir = path("c10"), split = "train"} end, "data_batch_5.bin",
      "truncated at byte offset 3000")
  end)
  it("reads CIFAR-100 with coarse and fine labels", function()
    C.mkdir_p(path("c100"))
    write(path("c100/train.bin"), string.char(7) .. record(63, 5))
    write(path("c100/test.bin"), string.char(19) .. record(99, 6))
    local tr = data.cifar100{dir = path("c100"), split = "train"}
    eq(table.concat(tr.tasks, ","), "coarse,fine")
    eq(tr:labels("coarse"):get(1), 7); eq(tr:labels("fine"):get(1), 63)
  end)
  it("says where to put missing files", function()
    raises(function() data.cifar10{dir = path("nowhere")} end, "nowhere/data_batch_1.bin not found")
  end)
end)

-- a folder of PNGs: two classes, images of different sizes
local function image(c, h, w, v)
  return T.full({c, h, w}, v)
end
describe("image folders", function()
  C.mkdir_p(path("imgs/cat")); C.mkdir_p(path("imgs/dog"))
  data.save_png(path("imgs/cat/1.png"), image(3, 8, 8, 0.2))
  data.save_png(path("imgs/cat/2.png"), image(3, 4, 6, 0.4))
  data.save_png(path("imgs/dog/1.png"), image(1, 16, 16, 0.8))
  write(path("imgs/dog/notes.txt"), "not an image")
  it("lists classes, decodes and resizes", function()
    local ds = data.folder(path("imgs"), {size = 4})
    eq(#ds, 3); eq(ds.classes.class, 2)
    eq(ds.class_names.class[1], "cat"); eq(ds.class_names.class[2], "dog")
    local x, y = ds:get(3)
    eq(y.class, 1); eq(x:size(1), 3); eq(x:size(2), 4)
    near(x:mean():item(), 204 / 255, 1e-6)
    near(ds:get(2):mean():item(), 102 / 255, 1e-6)
  end)
  it("reads grey and takes the first image's size by default", function()
    local ds = data.folder(path("imgs"), {channels = 1})
    eq(ds.channels, 1); eq(ds.height, 8)
  end)
  it("decodes in the loader's worker thread", function()
    local ds = data.folder(path("imgs"), {size = {5, 7}})
    local l = data.loader(ds, {batch_size = 2, threads = 2})
    local sizes = {}
    for x, y in l:iter() do sizes[#sizes + 1] = x:size(1); eq(x:size(4), 7) end
    eq(table.concat(sizes, ","), "2,1")
  end)
  -- The loader is the path for data sets larger than memory (training and extraction take whole
  -- tensors): images stay files until the worker decodes the next batch, so what the tensors
  -- hold at any time is a few batches, not the set.
  it("trains through the loader holding a few batches, never the whole set", function()
    C.mkdir_p(path("big/a")); C.mkdir_p(path("big/b"))
    for i = 1, 120 do data.save_png(path(string.format("big/%s/%d.png", i % 3 == 0 and "b" or "a", i)), image(3, 32, 32, i / 120)) end
    local ds = data.folder(path("big"))
    eq(ds.source:kind(), "files", "nothing decoded up front")
    local set_bytes = #ds * 3 * 32 * 32 * 4
    local w = T.zeros(3 * 32 * 32, 2):requires_grad_(true)
    local opt = require('tdrl.optim').SGD({w}, {lr = 0.01})
    T.empty_cache()
    T.reset_peak_memory()
    local base = T.memory().live_bytes
    local seen = {0, 0}
    for x, y in data.loader(ds, {batch_size = 6, shuffle = true, seed = 3}):iter() do
      opt:zero_grad()
      require('tdrl.nn').F.cross_entropy(x:reshape(x:size(1), -1):matmul(w), y.class):backward()
      opt:step()
      for _, c in ipairs(y.class:totable()) do seen[c + 1] = seen[c + 1] + 1 end
      collectgarbage() -- what the tensors hold, not what the collector has yet to free
    end
    eq(seen[1], 80, "every image of class a once"); eq(seen[2], 40, "every image of class b once")
    local held = T.memory().peak_bytes - base
    truthy(held < set_bytes / 2, string.format("peak %d bytes above the start, the set is %d", held, set_bytes))
  end)
  it("caches the decoded folder and notices changes", function()
    local a = data.folder(path("imgs"), {size = 4, cache = true})
    eq(a.source:kind(), "bytes")
    local b = data.folder(path("imgs"), {size = 4, cache = true})
    truthy(same(a:tensors(), b:tensors()))
    data.save_png(path("imgs/dog/2.png"), image(3, 4, 4, 1.0))
    local c = data.folder(path("imgs"), {size = 4, cache = true})
    eq(#c, 4)
    os.remove(path("imgs/dog/2.png"))
  end)
  it("names a corrupt PNG and its byte offset, whether read directly or by the loader", function()
    C.mkdir_p(path("bad/a"))
    data.save_png(path("bad/a/good.png"), image(3, 4, 4, 0.5))
    local png = read(path("bad/a/good.png"))
    write(path("bad/a/broken.png"), png:sub(1, 44) .. string.char(png:byte(45) ~ 0xFF) .. png:sub(46))
    local ds = data.folder(path("bad"), {size = 4})
    raises(function() ds:get(1) end, "broken.png", "byte offset", "CRC")
    local l = data.loader(ds, {batch_size = 1})
    raises(function() for _ in l:iter() do end end, "broken.png", "byte offset")
    raises(function() data.folder(path("bad"), {size = 4, cache = true}) end, "broken.png")
    write(path("bad/a/broken.png"), png:sub(1, #png - 30))
    raises(function() data.folder(path("bad"), {size = 4}):get(1) end, "broken.png", "truncated at byte offset")
  end)
  it("names an empty folder and a class folder without images", function()
    C.mkdir_p(path("empty"))
    raises(function() data.folder(path("empty")) end, "empty", "no class sub-folders")
    C.mkdir_p(path("noimg/a")); C.mkdir_p(path("noimg/b"))
    data.save_png(path("noimg/a/x.png"), image(3, 2, 2, 0))
    write(path("noimg/b/readme.txt"), "x")
    raises(function() data.folder(path("noimg")) end, "noimg/b", "class folder 2 of 2 ('b') holds no images")
    raises(function() data.folder(path("missing")) end, "missing")
  end)
end)

describe("cache", function()
  it("rebuilds a damaged entry and uses memory when the folder cannot be written", function()
    local dir = data.cache.dir
    local ds = data.folder(path("imgs"), {size = 4, cache = true})
    local name
    for _, n in ipairs(C.listdir(dir())) do if n:match("^folder%-") then name = n end end
    truthy(name, "no folder cache entry")
    local before = ds:tensors()
    -- replaced, not overwritten in place: the open set maps the old file (as the cache's own
    -- writes, which rename a finished temporary file over the entry)
    write(path("garbage"), "garbage")
    assert(os.rename(path("garbage"), dir() .. "/" .. name))
    local again = data.folder(path("imgs"), {size = 4, cache = true})
    truthy(same(again:tensors(), before))
    truthy(same(ds:tensors(), before))
    write(path("plainfile"), "x")
    data.cache.dir = function() return path("plainfile/sub") end
    local mem = data.folder(path("imgs"), {size = 4, cache = true})
    data.cache.dir = dir
    truthy(same(mem:tensors(), ds:tensors()))
  end)
end)

describe("damaged caches and orders (issue 22)", function()
  local function cache_file(p, header)
    write(p, string.pack("<I8", #header) .. header .. string.rep("\0", 8))
  end
  it("a cache whose shape product wraps to 0 is refused, naming the file", function()
    local p = path("wrap.safetensors")
    cache_file(p, '{"labels":{"dtype":"I64","shape":[0,4611686018427387904],"data_offsets":[0,0]},' ..
      '"images":{"dtype":"U8","shape":[4611686018427387904,1,2,2],"data_offsets":[0,0]}}')
    raises(function() return C.open(p) end, "wrap.safetensors", "sizes disagree")
    cache_file(p, '{"labels":{"dtype":"I64","shape":[0,1],"data_offsets":[0,0]},' ..
      '"images":{"dtype":"U8","shape":[1,4294967297,1,1],"data_offsets":[0,1]}}')
    raises(function() return C.open(p) end, "wrap.safetensors", "4294967297")
  end)
  it("a cache with a bad layout names the file", function()
    local p = path("layout.safetensors")
    cache_file(p, '{"labels":{"dtype":"I64","shape":[0,1],"data_offsets":[0,0]},' ..
      '"images":{"dtype":"U8","shape":[1,5,1,1],"data_offsets":[0,5]}}')
    raises(function() return C.open(p) end, "layout.safetensors", "cache: ", "bad layout", "5x1x1")
  end)
  it("loader:start refuses an order of the wrong length", function()
    local ds = data.synthetic{split = "train", n = 20, n_val = 2}
    local l = data.loader(ds, {batch_size = 4})
    raises(function() l.c:start(T.tensor({0, 1}, "int64")) end, "loader", "2 entries", tostring(ds.n))
    raises(function() l.c:start(T.arange(ds.n + 5):long()) end, "loader", tostring(ds.n + 5) .. " entries")
  end)
end)

describe("CelebA layout", function()
  C.mkdir_p(path("celeba/img_align_celeba"))
  local names = {"000001.png", "000002.png", "000003.png", "000004.png"}
  for i, n in ipairs(names) do
    data.save_png(path("celeba/img_align_celeba/" .. n), image(3, 10, 8, i / 5))
  end
  local attr = "4\nSmiling Male Young\n" ..
    "000001.png -1  1  1\n" ..
    "000002.png  1  1 -1\n" ..
    "000003.png  1 -1 -1\n" ..
    "000004.png -1 -1  1\n"
  write(path("celeba/list_attr_celeba.txt"), attr)
  write(path("celeba/list_eval_partition.txt"), "000001.png 0\n000002.png 0\n000003.png 1\n000004.png 2\n")
  it("reads the splits with 0/1 attribute tasks at the given size", function()
    local tr, va, te = data.celeba{dir = path("celeba"), size = 6}
    eq(#tr, 2); eq(#va, 1); eq(#te, 1)
    eq(table.concat(tr.tasks, ","), "Smiling,Male,Young"); eq(tr.classes.Male, 2)
    local x, y = tr:get(2)
    eq(y.Smiling, 1); eq(y.Male, 1); eq(y.Young, 0)
    eq(x:size(2), 6); eq(x:size(3), 6)
    near(x:mean():item(), 102 / 255, 1e-6)
  end)
  it("keeps chosen attributes and caches a split", function()
    local te = data.celeba{dir = path("celeba"), split = "test", size = 4, attributes = {"Young"}, cache = true}
    eq(table.concat(te.tasks, ","), "Young"); eq(te:labels("Young"):get(1), 1)
    eq(te.source:kind(), "bytes")
    raises(function() data.celeba{dir = path("celeba"), split = "test", attributes = {"Bald"}} end,
      "unknown attribute 'Bald'")
  end)
  it("names a missing attribute row", function()
    write(path("celeba/list_attr_celeba.txt"), "4\nSmiling Male Young\n000001.png -1 1 1\n000002.png 1 1 -1\n" ..
      "000004.png -1 -1 1\n")
    raises(function() data.celeba{dir = path("celeba"), split = "train"} end, "list_attr_celeba.txt",
      "line 1 announces 4 rows, the file holds 3")
    write(path("celeba/list_attr_celeba.txt"), "4\nSmiling Male Young\n000001.png -1 1 1\n000002.png 1 1\n" ..
      "000003.png 1 -1 -1\n000004.png -1 -1 1\n")
    raises(function() data.celeba{dir = path("celeba"), split = "train"} end, "line 4: expected 3 values")
    write(path("celeba/list_attr_celeba.txt"), attr)
  end)
  it("says what the folder should hold", function()
    raises(function() data.celeba{dir = path("nothing")} end, "list_attr_celeba.txt not found")
  end)
end)

describe("images and grids", function()
  it("writes a grid PNG that reads back with the grid's size", function()
    local x = T.rand(5, 3, 4, 6)
    data.save_grid(x, path("grid.png"), {nrow = 3, padding = 1})
    local g = data.load_image(path("grid.png"))
    eq(g:size(1), 3); eq(g:size(2), 2 * 5 + 1); eq(g:size(3), 3 * 7 + 1)
    spec.tensor_near(g:narrow(2, 2, 4):narrow(3, 2, 6), x[1], 0.5 / 255 + 1e-6)
    local ds = data.synthetic{split = "test", n_test = 16}
    data.save_grid(ds, path("syn.png"), {scale = 2})
    eq(data.load_image(path("syn.png")):size(2), 4 * (2 * 32 + 2) + 2, "images scaled, padding not")
  end)
  it("resizes tensors: area when shrinking, bilinear when growing", function()
    local x = T.arange(0, 16, 1):view(1, 1, 4, 4)
    spec.tensor_near(data.resize(x, 2, 2), T.tensor({{{{2.5, 4.5}, {10.5, 12.5}}}}), 1e-6)
    local y = T.tensor({{{0, 1}}})
    spec.tensor_near(data.resize(y, 1, 4), T.tensor({{{0, 0.25, 0.75, 1}}}), 1e-6)
  end)
  it("refuses bad arguments with a message", function()
    raises(function() data.save_png(path("x.png"), T.rand(2, 4, 4)) end, "2 channels")
    raises(function() data.save_grid(42, path("y.png")) end, "save_grid")
    raises(function() data.load_image(path("nope.png")) end, "nope.png", "cannot open")
  end)
end)

-- ---- real data, when present ------------------------------------------------------------
describe("real data", function()
  local fashion = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
  if U.exists(fashion) then
    it("reads Debian's Fashion-MNIST: 60,000 + 10,000, 1,000 test images per class", function()
      local tr, te = data.fashion_mnist()
      eq(#tr, 60000); eq(#te, 10000)
      local counts = te:class_counts("class")
      for c = 0, 9 do eq(counts[c], 1000) end
    end)
  else
    print("# note: " .. fashion .. " absent (apt-get install dataset-fashion-mnist): real Fashion-MNIST check skipped")
  end
  local mdir = os.getenv("TDRL_MNIST_DIR")
  local home = os.getenv("TDRL_DATA") or ((os.getenv("HOME") or "") .. "/.cache/tdrl")
  if not mdir and U.exists(home .. "/mnist/train-images-idx3-ubyte") then mdir = home .. "/mnist" end
  if mdir then
    it("reads real MNIST and colours it: 50,000 / 10,000 / 10,000", function()
      local tr = data.mnist{dir = mdir, split = "train"}
      eq(#tr, 60000); eq(tr:class_counts("digit")[1], 6742)
      local a, b, c = data.cmnist{dir = mdir}
      eq(#a, 50000); eq(#b, 10000); eq(#c, 10000)
      eq(a:labels("background"):eq(a:labels("foreground")):sum():item(), 0)
    end)
  else
    print("# note: no MNIST files found (TDRL_MNIST_DIR or the data cache): real MNIST check skipped")
  end
end)

os.execute("rm -rf " .. U.shq(tmp))

describe("JPEG Huffman tables", function()
  local data = require 'tdrl.data'
  it("a DC table with symbols above 15 is refused before stb_image decodes it (a fuzzer's crash)", function()
    spec.raises(function() data.load_image("tests/fixtures/images/dc_huffman_symbol_205.jpg") end,
      "dc_huffman_symbol_205.jpg", "DC Huffman symbol 205")
  end)
  it("a scan that names an undefined Huffman table is refused", function()
    -- a valid JPEG whose scan's first component is pointed at tables DC 2 / AC 2, which no DHT defines
    local f = assert(io.open("tests/fuzz/seeds/fuzz_image/small.jpg", "rb"))
    local b = f:read("a")
    f:close()
    local sos = b:find("\255\218", 1, true)
    b = b:sub(1, sos + 5) .. "\34" .. b:sub(sos + 7)
    local path = os.tmpname() .. ".jpg"
    local g = assert(io.open(path, "wb"))
    g:write(b)
    g:close()
    local ok, err = pcall(data.load_image, path)
    os.remove(path)
    spec.truthy(not ok, "refused")
    spec.truthy(tostring(err):find("names Huffman tables DC 2 / AC 2, not defined before it", 1, true), tostring(err))
  end)
end)
