/* File I/O: safetensors and .npy round trips, conversions from foreign dtypes, and every
 * malformed-input case the readers must reject with a message naming the file. */
#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../ops/tensor.h"
#include "check.h"

static char dir[64];

static const char *path_in(const char *name) {
    static char buf[4][256];
    static int k = 0;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(1); }
    if (n) fwrite(p, 1, n, f);
    fclose(f);
}

static unsigned char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long l = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(l ? (size_t)l : 1);
    *n = fread(b, 1, (size_t)l, f);
    fclose(f);
    return b;
}

static void cleanup_dir(void) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) unlink(path_in(e->d_name));
    }
    closedir(d);
    rmdir(dir);
}

/* Temporary files (PATH.tmp.<pid>) left in the directory. */
static int count_tmp_files(void) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

/* A tensor with values start, start+1, ... (float32 or int64). */
static td_tensor *ramp(td_dtype dt, int ndim, const int64_t *shape, double start) {
    td_tensor *t = td_empty(dt, ndim, shape);
    int64_t n = td_numel(t);
    for (int64_t i = 0; i < n; i++) {
        if (dt == TD_F32) td_f32(t)[i] = (float)(start + (double)i * 0.5);
        else td_i64(t)[i] = (int64_t)start + i;
    }
    return t;
}

static bool same_shape(const td_tensor *a, const td_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

/* Exact equality of logical contents (int64 compared without going through double). */
static bool same_values(td_tensor *a, td_tensor *b) {
    if (a->dtype != b->dtype || !same_shape(a, b)) return false;
    td_tensor *ca = td_contiguous(a), *cb = td_contiguous(b);
    int64_t n = td_numel(a);
    bool ok = true;
    for (int64_t i = 0; i < n && ok; i++) {
        if (a->dtype == TD_F32) ok = memcmp(&td_f32(ca)[i], &td_f32(cb)[i], 4) == 0;
        else ok = td_i64(ca)[i] == td_i64(cb)[i];
    }
    td_release(ca);
    td_release(cb);
    return ok;
}

static bool has(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

/* ---- safetensors helpers ---------------------------------------------------------------- */
/* Writes 8-byte length + header + data; hlen_override < 0 means use strlen(header). */
static const char *st_file(const char *name, const char *header, const void *data, size_t dlen,
                           long long hlen_override) {
    size_t hl = strlen(header);
    size_t n = 8 + hl + dlen;
    unsigned char *b = malloc(n);
    uint64_t L = hlen_override < 0 ? hl : (uint64_t)hlen_override;
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(L >> (8 * i));
    memcpy(b + 8, header, hl);
    if (dlen) memcpy(b + 8 + hl, data, dlen);
    const char *p = path_in(name);
    write_file(p, b, n);
    free(b);
    return p;
}

/* Loads a damaged file and checks it fails, names the file, has the phrase and leaks nothing. */
static void st_bad(const char *path, const char *phrase, const char *label) {
    td_named *ts = (td_named *)1;
    td_kv *kv = (td_kv *)1;
    int n = 7, nm = 7;
    size_t live = td_bytes_live();
    int rc = td_safetensors_load(path, &ts, &n, &kv, &nm);
    const char *e = td_last_error();
    CHECK(rc == -1 && ts == NULL && n == 0 && kv == NULL && nm == 0, "safetensors rejects %s", label);
    CHECK(has(e, path) && has(e, phrase), "safetensors %s message names file and says '%s': %s", label, phrase, e);
    CHECK(td_bytes_live() == live, "safetensors %s leaves no tensor memory behind", label);
}

static void test_safetensors_roundtrip(void) {
    int64_t s34[] = {3, 4}, s0[] = {0, 5}, s8[] = {2, 1, 2, 1, 2, 1, 2, 1}, s5[] = {5};
    td_tensor *a = ramp(TD_F32, 2, s34, -3);
    td_tensor *b = ramp(TD_I64, 1, s5, 0);
    td_i64(b)[0] = INT64_MAX;
    td_i64(b)[1] = INT64_MIN;
    td_i64(b)[2] = ((int64_t)1 << 53) + 1; /* not representable as a double */
    td_tensor *sc = td_scalar(3.25f);
    td_tensor *em = td_empty(TD_F32, 2, s0);
    td_tensor *e8 = ramp(TD_F32, 8, s8, 1);
    td_tensor *base = ramp(TD_I64, 2, s34, 100);
    td_tensor *nc = td_transpose(base, 0, 1); /* 4x3, non-contiguous */
    td_tensor *ncf = td_transpose(a, 0, 1);
    CHECK(nc && !td_is_contiguous(nc) && ncf && !td_is_contiguous(ncf), "transposed inputs are non-contiguous");
    td_named in[] = {{"weight", a}, {"ids", b}, {"scalar", sc}, {"empty", em},
                     {"eight", e8}, {"nc_i64", nc}, {"nc_f32", ncf}};
    int nin = (int)(sizeof in / sizeof in[0]);
    td_kv meta[] = {{"format", "pt"}, {"step", "1200"}, {"quote\"d", "line\nbreak \xc3\xa9"}};
    const char *p = path_in("rt.safetensors");
    int rc = td_safetensors_save(p, in, nin, meta, 3);
    CHECK(rc == 0, "safetensors save (%s)", rc ? td_last_error() : "ok");
    CHECK(count_tmp_files() == 0, "safetensors save leaves no temporary file");

    size_t flen;
    unsigned char *raw = read_file(p, &flen);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | raw[i];
    CHECK(hl % 8 == 0 && hl + 8 <= flen && raw[8] == '{', "header length %llu is a multiple of 8",
          (unsigned long long)hl);
    CHECK(raw[8 + hl - 1] == ' ' || raw[8 + hl - 1] == '}', "header padded with spaces");
    size_t expect_data = 12 * 4 + 5 * 8 + 4 + 0 + 16 * 4 + 12 * 8 + 12 * 4;
    CHECK(flen == 8 + hl + expect_data, "data section is packed (%zu bytes)", (size_t)(flen - 8 - hl));
    char *hdr = malloc(hl + 1);
    memcpy(hdr, raw + 8, hl);
    hdr[hl] = 0;
    CHECK(has(hdr, "\"weight\":{\"dtype\":\"F32\",\"shape\":[3,4],\"data_offsets\":[0,48]}"),
          "header text: %s", hdr);
    CHECK(has(hdr, "\"ids\":{\"dtype\":\"I64\",\"shape\":[5],\"data_offsets\":[48,88]}"), "I64 entry in header");
    CHECK(strstr(hdr, "\"weight\"") < strstr(hdr, "\"ids\"") && strstr(hdr, "\"ids\"") < strstr(hdr, "\"nc_f32\""),
          "tensors written in the order given");
    free(hdr);
    free(raw);

    td_named *out = NULL;
    td_kv *kv = NULL;
    int n = 0, nm = 0;
    rc = td_safetensors_load(p, &out, &n, &kv, &nm);
    CHECK(rc == 0 && n == nin && nm == 3, "safetensors load (%s) n=%d nm=%d", rc ? td_last_error() : "ok", n, nm);
    for (int i = 0; i < n && i < nin; i++) {
        CHECK(strcmp(out[i].name, in[i].name) == 0, "tensor %d name %s", i, out[i].name);
        CHECK(td_is_contiguous(out[i].t) && same_values(out[i].t, in[i].t), "tensor '%s' round-trips (%s, ndim %d)",
              in[i].name, td_dtype_name(in[i].t->dtype), in[i].t->ndim);
    }
    for (int i = 0; i < nm && i < 3; i++)
        CHECK(strcmp(kv[i].key, meta[i].key) == 0 && strcmp(kv[i].value, meta[i].value) == 0,
              "metadata '%s' round-trips", meta[i].key);
    td_named_free(out, n);
    td_kv_free(kv, nm);

    /* Loading without asking for metadata. */
    rc = td_safetensors_load(p, &out, &n, NULL, NULL);
    CHECK(rc == 0 && n == nin, "load without a metadata output");
    td_named_free(out, n);

    /* Overwrite in place (atomic rename over an existing file); no metadata; no tensors. */
    rc = td_safetensors_save(p, in, 1, NULL, 0);
    rc |= td_safetensors_load(p, &out, &n, &kv, &nm);
    CHECK(rc == 0 && n == 1 && nm == 0 && kv == NULL && same_values(out[0].t, a), "overwrite with one tensor");
    td_named_free(out, n);
    rc = td_safetensors_save(p, NULL, 0, NULL, 0);
    rc |= td_safetensors_load(p, &out, &n, &kv, &nm);
    CHECK(rc == 0 && n == 0 && nm == 0, "empty file of no tensors round-trips");
    td_named_free(out, n);

    /* Save errors. */
    td_named dup[] = {{"x", a}, {"x", b}};
    rc = td_safetensors_save(p, dup, 2, NULL, 0);
    CHECK(rc == -1 && has(td_last_error(), "duplicate tensor name 'x'") && has(td_last_error(), p),
          "duplicate names refused: %s", td_last_error());
    td_named res[] = {{"__metadata__", a}};
    rc = td_safetensors_save(p, res, 1, NULL, 0);
    CHECK(rc == -1 && has(td_last_error(), "reserved"), "'__metadata__' as a name refused");
    td_named bad_utf[] = {{"\xff\xfe", a}};
    rc = td_safetensors_save(p, bad_utf, 1, NULL, 0);
    CHECK(rc == -1 && has(td_last_error(), "UTF-8"), "invalid UTF-8 name refused: %s", td_last_error());
    const char *nodir = path_in("no/such/dir.st");
    rc = td_safetensors_save(nodir, in, 1, NULL, 0);
    CHECK(rc == -1 && has(td_last_error(), nodir), "unwritable path refused: %s", td_last_error());
    CHECK(count_tmp_files() == 0, "failed saves leave no files behind");
    unlink(p);

    td_release(a); td_release(b); td_release(sc); td_release(em); td_release(e8);
    td_release(base); td_release(nc); td_release(ncf);
}

static void test_safetensors_foreign(void) {
    /* Hand-packed dtypes the reader converts. */
    double f64[] = {1.5, -2.25, 1e30};
    uint16_t f16[] = {0x3c00, 0xc000, 0x7c00, 0x0001}; /* 1, -2, inf, 2^-24 */
    uint16_t bf16[] = {0x3f80, 0xc0a0};                /* 1, -5 */
    int32_t i32[] = {-7, 2147483647};
    int16_t i16[] = {-32768, 5};
    int8_t i8[] = {-128, 127};
    uint8_t u8[] = {255, 0};
    uint8_t bl[] = {0, 1, 2};
    unsigned char data[256];
    size_t k = 0;
#define PUT(x) (memcpy(data + k, x, sizeof x), k += sizeof x)
    PUT(f64); PUT(f16); PUT(bf16); PUT(i32); PUT(i16); PUT(i8); PUT(u8); PUT(bl);
#undef PUT
    const char *hdr =
        "{\"__metadata__\":{\"a\":\"b\"},"
        "\"f64\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[0,24]},"
        "\"f16\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[24,32]},"
        "\"bf16\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[32,36]},"
        "\"i32\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[36,44]},"
        "\"i16\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[44,48]},"
        "\"i8\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[48,50]},"
        "\"u8\":{\"dtype\":\"U8\",\"shape\":[2,1],\"data_offsets\":[50,52]},"
        "\"bool\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[52,55]},"
        "\"alias\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[50,51]}}";
    const char *p = st_file("foreign.st", hdr, data, k, -1);
    td_named *ts = NULL;
    td_kv *kv = NULL;
    int n = 0, nm = 0;
    int rc = td_safetensors_load(p, &ts, &n, &kv, &nm);
    CHECK(rc == 0 && n == 9 && nm == 1, "foreign dtypes load (%s)", rc ? td_last_error() : "ok");
    if (rc == 0 && n == 9) {
        CHECK(ts[0].t->dtype == TD_F32 && td_f32(ts[0].t)[1] == -2.25f && td_f32(ts[0].t)[2] == 1e30f, "F64 -> float32");
        float *h = td_f32(ts[1].t);
        CHECK(ts[1].t->ndim == 2 && h[0] == 1 && h[1] == -2 && isinf(h[2]) && h[3] == ldexpf(1, -24), "F16 -> float32");
        CHECK(td_f32(ts[2].t)[0] == 1 && td_f32(ts[2].t)[1] == -5, "BF16 -> float32");
        CHECK(ts[3].t->dtype == TD_I64 && td_i64(ts[3].t)[0] == -7 && td_i64(ts[3].t)[1] == 2147483647, "I32 -> int64");
        CHECK(td_i64(ts[4].t)[0] == -32768 && td_i64(ts[4].t)[1] == 5, "I16 -> int64");
        CHECK(td_i64(ts[5].t)[0] == -128 && td_i64(ts[5].t)[1] == 127, "I8 -> int64");
        CHECK(td_i64(ts[6].t)[0] == 255 && td_i64(ts[6].t)[1] == 0, "U8 -> int64");
        CHECK(td_i64(ts[7].t)[0] == 0 && td_i64(ts[7].t)[1] == 1 && td_i64(ts[7].t)[2] == 1, "BOOL -> int64 0/1");
        CHECK(ts[8].t->ndim == 0 && td_i64(ts[8].t)[0] == 255, "overlapping offsets and a 0-d entry are accepted");
    }
    td_named_free(ts, n);
    td_kv_free(kv, nm);

    /* Parsing straight from memory, with and without a name. */
    size_t flen;
    unsigned char *raw = read_file(p, &flen);
    rc = td_safetensors_parse(raw, flen, NULL, &ts, &n, NULL, NULL);
    CHECK(rc == 0 && n == 9, "parse from a buffer");
    td_named_free(ts, n);
    rc = td_safetensors_parse(raw, 20, "membuf", &ts, &n, NULL, NULL);
    CHECK(rc == -1 && has(td_last_error(), "membuf"), "parse error names the buffer: %s", td_last_error());
    free(raw);
}

static void test_safetensors_bad(void) {
    const char *p;
    float four[4] = {1, 2, 3, 4};
    write_file(p = path_in("short.st"), "\x10\0\0", 3);
    st_bad(p, "too short", "3-byte file");
    write_file(p = path_in("zero.st"), "", 0);
    st_bad(p, "too short", "empty file");
    p = st_file("hlen.st", "{}", NULL, 0, 1000);
    st_bad(p, "header length 1000 is larger than the file", "oversized header length");
    p = st_file("hlen2.st", "{}", NULL, 0, (long long)0x7fffffffffffffffLL);
    st_bad(p, "larger than the file", "huge header length");
    p = st_file("json.st", "{\"a\": {\"dtype\":", NULL, 0, -1);
    st_bad(p, "invalid JSON header at byte offset", "truncated JSON");
    p = st_file("json2.st", "{\"a\": 1} trailing", NULL, 0, -1);
    st_bad(p, "invalid JSON", "trailing garbage");
    p = st_file("dupkey.st", "{\"a\":{},\"a\":{}}", NULL, 0, -1);
    st_bad(p, "invalid JSON", "duplicate keys");
    p = st_file("array.st", "[1, 2]", NULL, 0, -1);
    st_bad(p, "header is not a JSON object", "array header");
    p = st_file("notobj.st", "{\"w\": 3}", NULL, 0, -1);
    st_bad(p, "tensor 'w': entry is not a JSON object", "non-object entry");
    p = st_file("nodtype.st", "{\"w\": {\"shape\":[1],\"data_offsets\":[0,4]}}", four, 4, -1);
    st_bad(p, "tensor 'w': missing or non-string 'dtype'", "missing dtype");
    p = st_file("dtypenum.st", "{\"w\": {\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", four, 4, -1);
    st_bad(p, "non-string 'dtype'", "numeric dtype");
    p = st_file("dtypebad.st", "{\"w\": {\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":[0,4]}}", four, 4, -1);
    st_bad(p, "tensor 'w': unsupported dtype 'C64'", "unknown dtype");
    p = st_file("noshape.st", "{\"w\": {\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", four, 4, -1);
    st_bad(p, "tensor 'w': missing or non-array 'shape'", "missing shape");
    p = st_file("shapestr.st", "{\"w\": {\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", four, 4, -1);
    st_bad(p, "non-array 'shape'", "string shape");
    p = st_file("shapeneg.st", "{\"w\": {\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,4]}}", four, 4, -1);
    st_bad(p, "tensor 'w': shape[1] is not a non-negative integer", "negative size");
    p = st_file("shapeflt.st", "{\"w\": {\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", four, 4, -1);
    st_bad(p, "shape[0] is not a non-negative integer", "fractional size");
    p = st_file("shapenull.st", "{\"w\": {\"dtype\":\"F32\",\"shape\":[null],\"data_offsets\":[0,4]}}", four, 4, -1);
    st_bad(p, "shape[0] is not a non-negative integer", "null size");
    p = st_file("dims9.st", "{\"w\": {\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
                four, 4, -1);
    st_bad(p, "tensor 'w': shape has 9 dims", "nine dims");
    p = st_file("ovf.st", "{\"w\": {\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}",
                four, 4, -1);
    st_bad(p, "tensor 'w': element count of the shape overflows", "element-count overflow");
    p = st_file("ovf0.st", "{\"w\": {\"dtype\":\"F32\",\"shape\":[0,9223372036854775807],\"data_offsets\":[0,0]}}",
                NULL, 0, -1);
    st_bad(p, "tensor 'w'", "empty but absurdly large shape");
    p = st_file("nooff.st", "{\"w\": {\"dtype\":\"F32\",\"shape\":[1]}}", four, 4, -1);
    st_bad(p, "tensor 'w': 'data_offsets' must be an array of 2 integers", "missing data_offsets");
    p = st_file("off1.st", "{\"w\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", four, 4, -1);
    st_bad(p, "'data_offsets' must be an array of 2 integers", "one offset");
    p = st_file("offstr.st", "{\"w\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\"0\",4]}}", four, 4, -1);
    st_bad(p, "'data_offsets' must be an array of 2 integers", "string offset");
    p = st_file("offsize.st", "{\"w\": {\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", four, 16, -1);
    st_bad(p, "tensor 'w' data_offsets [0, 8] hold 8 bytes but F32 shape [3] needs 12", "size mismatch");
    /* "{...}" is 64 bytes of header, so the data section starts at byte offset 72. */
    const char *h64 = "{\"w\": {\"dtype\":\"F32\",\"shape\":[10],\"data_offsets\":[0,40]}}      ";
    p = st_file("offrange.st", h64, four, 16, -1);
    char want[160];
    snprintf(want, sizeof want, "tensor 'w' data_offsets [0, 40] out of range (data section is 16 bytes, at byte offset %zu)",
             8 + strlen(h64));
    st_bad(p, want, "offsets past the end");
    p = st_file("offneg.st", "{\"w\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", four, 16, -1);
    st_bad(p, "out of range", "negative offset");
    p = st_file("offrev.st", "{\"w\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", four, 16, -1);
    st_bad(p, "out of range", "end before begin");
    p = st_file("meta1.st", "{\"__metadata__\": [1]}", NULL, 0, -1);
    st_bad(p, "'__metadata__' is not a JSON object", "metadata array");
    p = st_file("meta2.st", "{\"__metadata__\": {\"step\": 3}}", NULL, 0, -1);
    st_bad(p, "'__metadata__' value of 'step' is not a string", "metadata number");
    /* A bad entry after good ones: nothing from the good ones may leak. */
    p = st_file("late.st",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,99]}}",
                four, 16, -1);
    st_bad(p, "tensor 'b' data_offsets [8, 99] out of range", "bad second entry");
    st_bad(path_in("missing.st"), "cannot open", "missing file");
    st_bad(dir, "not a regular file", "directory");
}

/* ---- npy -------------------------------------------------------------------------------- */
/* A .npy file with the given version, header dict and data. */
static const char *npy_file(const char *name, int major, const char *dict, const void *data, size_t dlen) {
    unsigned char b[4096];
    size_t k = 0, hl = strlen(dict);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (unsigned char)major;
    b[7] = 0;
    if (major == 1) {
        b[8] = (unsigned char)hl;
        b[9] = (unsigned char)(hl >> 8);
        k = 10;
    } else {
        for (int i = 0; i < 4; i++) b[8 + i] = (unsigned char)(hl >> (8 * i));
        k = 12;
    }
    memcpy(b + k, dict, hl);
    k += hl;
    if (dlen) memcpy(b + k, data, dlen);
    k += dlen;
    const char *p = path_in(name);
    write_file(p, b, k);
    return p;
}

static void npy_bad(const char *path, const char *phrase, const char *label) {
    size_t live = td_bytes_live();
    td_tensor *t = td_npy_load(path);
    const char *e = td_last_error();
    CHECK(t == NULL, "npy rejects %s", label);
    CHECK(has(e, path) && has(e, phrase), "npy %s message names file and says '%s': %s", label, phrase, e);
    CHECK(td_bytes_live() == live, "npy %s leaves no tensor memory behind", label);
    td_release(t);
}

static void test_npy_roundtrip(void) {
    int64_t s34[] = {3, 4}, s0[] = {0, 3}, s8[] = {2, 1, 2, 1, 2, 1, 2, 1}, s5[] = {5};
    td_tensor *a = ramp(TD_F32, 2, s34, -1);
    td_tensor *b = ramp(TD_I64, 1, s5, -2);
    td_i64(b)[4] = INT64_MIN + 1;
    td_tensor *sc = td_scalar(-0.125f);
    td_tensor *em = td_empty(TD_I64, 2, s0);
    td_tensor *e8 = ramp(TD_I64, 8, s8, 7);
    td_tensor *nc = td_transpose(a, 0, 1);
    td_tensor *cases[] = {a, b, sc, em, e8, nc};
    const char *names[] = {"f32 3x4", "i64 1-d", "0-d", "empty 0x3", "8-d", "transposed f32"};
    for (int i = 0; i < 6; i++) {
        const char *p = path_in("rt.npy");
        int rc = td_npy_save(p, cases[i]);
        td_tensor *r = rc == 0 ? td_npy_load(p) : NULL;
        CHECK(r && td_is_contiguous(r) && same_values(r, cases[i]), "npy round trip: %s (%s)", names[i],
              r ? "ok" : td_last_error());
        size_t flen;
        unsigned char *raw = read_file(p, &flen);
        size_t hl = raw[8] | (size_t)raw[9] << 8;
        CHECK(raw[6] == 1 && raw[7] == 0 && (10 + hl) % 64 == 0 && raw[10 + hl - 1] == '\n' &&
                  flen == 10 + hl + (size_t)td_numel(cases[i]) * td_dtype_size(cases[i]->dtype),
              "npy layout: %s", names[i]);
        free(raw);
        td_release(r);
    }
    const char *p = path_in("rt.npy");
    size_t flen;
    td_npy_save(p, b);
    unsigned char *raw = read_file(p, &flen);
    CHECK(memcmp(raw + 10, "{'descr': '<i8', 'fortran_order': False, 'shape': (5,), }", 57) == 0, "1-d header text");
    free(raw);
    td_npy_save(p, sc);
    raw = read_file(p, &flen);
    CHECK(memcmp(raw + 10, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 55) == 0, "0-d header text");
    free(raw);
    CHECK(count_tmp_files() == 0, "npy save leaves no temporary file");
    unlink(p);
    CHECK(td_npy_save(path_in("no/dir/x.npy"), a) == -1 && has(td_last_error(), "no/dir/x.npy"),
          "npy save to a missing directory fails: %s", td_last_error());
    td_release(a); td_release(b); td_release(sc); td_release(em); td_release(e8); td_release(nc);
}

static void test_npy_foreign(void) {
    const char *p;
    td_tensor *t;
    /* big-endian float32 */
    unsigned char be[] = {0x3f, 0x80, 0, 0, 0xc0, 0x20, 0, 0}; /* 1, -2.5 */
    p = npy_file("be.npy", 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }\n", be, 8);
    t = td_npy_load(p);
    CHECK(t && t->dtype == TD_F32 && td_f32(t)[0] == 1 && td_f32(t)[1] == -2.5f, "'>f4' is byte-swapped");
    td_release(t);
    double f8[] = {0.1, -3};
    p = npy_file("f8.npy", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2)}", f8, 16);
    t = td_npy_load(p);
    CHECK(t && t->dtype == TD_F32 && t->ndim == 2 && td_f32(t)[0] == 0.1f && td_f32(t)[1] == -3, "'<f8' -> float32");
    td_release(t);
    unsigned char bed[] = {0x40, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18}; /* pi */
    p = npy_file("bef8.npy", 1, "{\"descr\": \">f8\", \"fortran_order\": False, \"shape\": ()}", bed, 8);
    t = td_npy_load(p);
    CHECK(t && t->ndim == 0 && td_f32(t)[0] == 3.14159265358979f, "'>f8' 0-d, double-quoted keys");
    td_release(t);
    uint16_t f2[] = {0x3555}; /* ~1/3 */
    p = npy_file("f2.npy", 1, "{'descr': '<f2', 'fortran_order': False, 'shape': (1,), }", f2, 2);
    t = td_npy_load(p);
    CHECK(t && fabsf(td_f32(t)[0] - 0.33325195f) < 1e-7f, "'<f2' -> float32");
    td_release(t);
    int32_t i4[] = {-5, 70000, 3};
    p = npy_file("i4.npy", 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (3L,), }", i4, 12);
    t = td_npy_load(p);
    CHECK(t && t->dtype == TD_I64 && td_i64(t)[0] == -5 && td_i64(t)[1] == 70000, "'<i4' -> int64 (Python 2 long)");
    td_release(t);
    unsigned char bei4[] = {0xff, 0xff, 0xff, 0xfe};
    p = npy_file("bei4.npy", 1, "{'descr': '>i4', 'fortran_order': False, 'shape': (1,), }", bei4, 4);
    t = td_npy_load(p);
    CHECK(t && td_i64(t)[0] == -2, "'>i4' is byte-swapped");
    td_release(t);
    int64_t i8v[] = {INT64_MAX};
    p = npy_file("i8.npy", 2, "{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }", i8v, 8);
    t = td_npy_load(p);
    CHECK(t && td_i64(t)[0] == INT64_MAX, "version 2.0 header, '<i8'");
    td_release(t);
    int16_t i2[] = {-300};
    p = npy_file("i2.npy", 3, "{'descr': '<i2', 'fortran_order': False, 'shape': (1,), }", i2, 2);
    t = td_npy_load(p);
    CHECK(t && td_i64(t)[0] == -300, "version 3.0 header, '<i2'");
    td_release(t);
    int8_t i1[] = {-1, 2};
    p = npy_file("i1.npy", 1, "{'descr': '|i1', 'fortran_order': False, 'shape': (2,), }", i1, 2);
    t = td_npy_load(p);
    CHECK(t && td_i64(t)[0] == -1 && td_i64(t)[1] == 2, "'|i1'");
    td_release(t);
    uint8_t u1[] = {200, 1};
    p = npy_file("u1.npy", 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (2,), }", u1, 2);
    t = td_npy_load(p);
    CHECK(t && td_i64(t)[0] == 200, "'|u1'");
    td_release(t);
    uint16_t u2[] = {65535};
    p = npy_file("u2.npy", 1, "{'descr': '<u2', 'fortran_order': False, 'shape': (1,), }", u2, 2);
    t = td_npy_load(p);
    CHECK(t && td_i64(t)[0] == 65535, "'<u2'");
    td_release(t);
    uint32_t u4[] = {4000000000u};
    p = npy_file("u4.npy", 1, "{'descr': '<u4', 'fortran_order': False, 'shape': (1,), }", u4, 4);
    t = td_npy_load(p);
    CHECK(t && td_i64(t)[0] == 4000000000LL, "'<u4'");
    td_release(t);
    uint8_t b1[] = {1, 0, 1};
    p = npy_file("b1.npy", 1, "{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }", b1, 3);
    t = td_npy_load(p);
    CHECK(t && td_i64(t)[0] == 1 && td_i64(t)[1] == 0 && td_i64(t)[2] == 1, "'|b1' -> 0/1");
    td_release(t);
    /* Fortran order: a 2x3 array [[0,1,2],[3,4,5]] stored column by column. */
    float fo[] = {0, 3, 1, 4, 2, 5};
    p = npy_file("fo.npy", 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", fo, 24);
    t = td_npy_load(p);
    bool ok = t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3;
    for (int i = 0; ok && i < 6; i++) ok = td_f32(t)[i] == (float)i;
    CHECK(ok, "fortran_order True 2x3 is transposed into row-major");
    td_release(t);
    /* 2x3x2 in Fortran order: element (i,j,k) = 100i + 10j + k, stored with i fastest. */
    int64_t fo3[12];
    int m = 0;
    for (int kk = 0; kk < 2; kk++)
        for (int j = 0; j < 3; j++)
            for (int i = 0; i < 2; i++) fo3[m++] = 100 * i + 10 * j + kk;
    p = npy_file("fo3.npy", 1, "{'descr': '<i8', 'fortran_order': True, 'shape': (2, 3, 2), }", fo3, sizeof fo3);
    t = td_npy_load(p);
    ok = t != NULL;
    m = 0;
    for (int i = 0; ok && i < 2; i++)
        for (int j = 0; j < 3; j++)
            for (int kk = 0; kk < 2; kk++) ok = ok && td_i64(t)[m++] == 100 * i + 10 * j + kk;
    CHECK(ok, "fortran_order True 3-d int64");
    td_release(t);
    p = npy_file("empty.npy", 1, "{'descr': '<f8', 'fortran_order': True, 'shape': (4, 0), }", NULL, 0);
    t = td_npy_load(p);
    CHECK(t && t->ndim == 2 && t->shape[0] == 4 && td_numel(t) == 0, "empty Fortran-order array");
    td_release(t);
    /* From memory. */
    unsigned char buf[128];
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    const char *d = "{'descr':'<f4','fortran_order':False,'shape':(1,)}";
    buf[8] = (unsigned char)strlen(d);
    buf[9] = 0;
    memcpy(buf + 10, d, strlen(d));
    float one = 1;
    memcpy(buf + 10 + strlen(d), &one, 4);
    t = td_npy_parse(buf, 10 + strlen(d) + 4, NULL);
    CHECK(t && td_f32(t)[0] == 1, "npy parse from a buffer, compact dict");
    td_release(t);
    t = td_npy_parse(buf, 10 + strlen(d) + 2, "membuf");
    CHECK(!t && has(td_last_error(), "membuf") && has(td_last_error(), "truncated data"),
          "npy parse error names the buffer: %s", td_last_error());
}

static void test_npy_bad(void) {
    const char *p;
    float f[4] = {0};
    write_file(p = path_in("short.npy"), "\x93NUM", 4);
    npy_bad(p, "too short", "4-byte file");
    write_file(p = path_in("zero.npy"), "", 0);
    npy_bad(p, "too short", "empty file");
    write_file(p = path_in("magic.npy"), "PK\x03\x04 not numpy at all", 22);
    npy_bad(p, "bad magic at byte offset 0", "wrong magic");
    p = npy_file("ver.npy", 4, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", f, 4);
    npy_bad(p, "unsupported format version 4.0", "version 4");
    unsigned char hl[] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0xff, 0x00, '{', '}'};
    write_file(p = path_in("hlen.npy"), hl, sizeof hl);
    npy_bad(p, "header length 255 at byte offset 8 runs past the end", "header longer than the file");
    p = npy_file("nobrace.npy", 1, "descr", NULL, 0);
    npy_bad(p, "bad header at byte offset 10: expected '{'", "no dict");
    p = npy_file("nokey.npy", 1, "{'descr': '<f4', 'shape': (1,), }", f, 4);
    npy_bad(p, "header lacks 'fortran_order'", "missing key");
    p = npy_file("extra.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", f, 4);
    npy_bad(p, "unexpected or repeated key", "unknown key");
    p = npy_file("rep.npy", 1, "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", f, 4);
    npy_bad(p, "unexpected or repeated key", "repeated key");
    p = npy_file("descr.npy", 1, "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", f, 8);
    npy_bad(p, "unsupported dtype descr '<c8'", "complex dtype");
    p = npy_file("descr2.npy", 1, "{'descr': '|f4', 'fortran_order': False, 'shape': (1,), }", f, 8);
    npy_bad(p, "unsupported dtype descr '|f4'", "'|' on a 4-byte type");
    p = npy_file("struct.npy", 1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", f, 4);
    npy_bad(p, "structured dtypes are not supported", "structured dtype");
    p = npy_file("fo.npy", 1, "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,), }", f, 4);
    npy_bad(p, "fortran_order must be True or False", "bad fortran_order");
    p = npy_file("neg.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", f, 4);
    npy_bad(p, "expected a non-negative integer in the shape", "negative size");
    p = npy_file("dims9.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", f, 4);
    npy_bad(p, "shape has more than 8 dims", "nine dims");
    p = npy_file("big.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", f, 4);
    npy_bad(p, "shape value too large", "size beyond int64");
    p = npy_file("ovf.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", f, 4);
    npy_bad(p, "element count of the shape overflows", "element-count overflow");
    p = npy_file("unterm.npy", 1, "{'descr': '<f4", NULL, 0);
    npy_bad(p, "unterminated string", "unterminated string");
    p = npy_file("after.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } junk", f, 4);
    npy_bad(p, "unexpected text after the header dict", "text after the dict");
    p = npy_file("trunc.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }", f, 10);
    char want[128];
    snprintf(want, sizeof want, "truncated data: need 48 bytes at offset %zu, file has 10",
             10 + strlen("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }"));
    npy_bad(p, want, "truncated data");
    p = npy_file("trunc0.npy", 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (), }", f, 4);
    npy_bad(p, "truncated data: need 8 bytes", "truncated 0-d");
    npy_bad(path_in("missing.npy"), "cannot open", "missing file");
    npy_bad(dir, "not a regular file", "directory");
}

/* Temporary files of saves killed part-way are removed by the next save of the same file, and
 * only those (issue 22, item 14). A child that has exited and been reaped gives a dead pid. */
static void test_stale_tmp(void) {
    pid_t child = fork();
    if (child == 0) _exit(0);
    waitpid(child, NULL, 0);
    char dead[256], live[256], other[256], name[128];
    snprintf(name, sizeof name, "ck.safetensors.tmp.%ld", (long)child);
    snprintf(dead, sizeof dead, "%s", path_in(name));
    snprintf(name, sizeof name, "ck.safetensors.tmp.%ld", (long)getppid()); /* a running process */
    snprintf(live, sizeof live, "%s", path_in(name));
    snprintf(name, sizeof name, "other.safetensors.tmp.%ld", (long)child);
    snprintf(other, sizeof other, "%s", path_in(name));
    write_file(dead, "partial", 7);
    write_file(live, "partial", 7);
    write_file(other, "partial", 7);
    td_tensor *x = td_zeros(TD_F32, 1, (int64_t[]){3});
    td_named ts[1] = {{"x", x}};
    CHECK(td_safetensors_save(path_in("ck.safetensors"), ts, 1, NULL, 0) == 0, "stale tmp: save succeeds");
    CHECK(access(dead, F_OK) != 0, "stale tmp: a dead writer's temporary file is removed");
    CHECK(access(live, F_OK) == 0, "stale tmp: a running writer's temporary file is kept");
    CHECK(access(other, F_OK) == 0, "stale tmp: another file's temporary file is kept");
    unlink(live);
    unlink(other);
    td_release(x);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/tdrl_test_io_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_safetensors_roundtrip();
    test_safetensors_foreign();
    test_safetensors_bad();
    test_npy_roundtrip();
    test_npy_foreign();
    test_npy_bad();
    test_stale_tmp();
    cleanup_dir();
    return check_failures;
}
