/* Data core: IDX (raw, gzip, damaged), CIFAR batches, CelebA lists, image decoding and the
 * damage reports, resizing against its reference, PNG round trips, the Synthetic and
 * Colored-MNIST generators, the cache file, batch filling and the prefetching loader.
 * Every input file is written here, in a fresh temporary folder. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include <stb/stb_image_write.h>

#include "../../ops/io/data.h"
#include "check.h"

static char dir[256];

static const char *path_of(const char *name) {
    static char buf[8][512];
    static int k = 0;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fwrite(p, 1, n, f);
    fclose(f);
}

static uint8_t *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    uint8_t *b = malloc((size_t)len + 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

static int has(const char *msg, const char *part) { return strstr(msg, part) != NULL; }

/* IDX bytes: header for (type, dims) + payload */
static size_t idx_bytes(uint8_t *out, int type, int ndim, const uint32_t *dims, const void *payload, size_t plen) {
    out[0] = 0;
    out[1] = 0;
    out[2] = (uint8_t)type;
    out[3] = (uint8_t)ndim;
    for (int d = 0; d < ndim; d++) {
        out[4 + 4 * d] = (uint8_t)(dims[d] >> 24);
        out[5 + 4 * d] = (uint8_t)(dims[d] >> 16);
        out[6 + 4 * d] = (uint8_t)(dims[d] >> 8);
        out[7 + 4 * d] = (uint8_t)dims[d];
    }
    memcpy(out + 4 + 4 * ndim, payload, plen);
    return 4 + 4 * (size_t)ndim + plen;
}

static void test_idx(void) {
    /* 3 images of 2x4, labels 0..2 */
    uint8_t px[24], lb[3] = {2, 0, 1}, buf[256];
    for (int i = 0; i < 24; i++) px[i] = (uint8_t)(i * 10);
    uint32_t di[3] = {3, 2, 4}, dl[1] = {3};
    size_t ni = idx_bytes(buf, 0x08, 3, di, px, 24);
    write_bytes(path_of("img.idx"), buf, ni);
    size_t nl = idx_bytes(buf + 128, 0x08, 1, dl, lb, 3);
    write_bytes(path_of("lab.idx"), buf + 128, nl);
    td_source *s = td_idx_source(path_of("img.idx"), path_of("lab.idx"), 10);
    CHECK(s && s->n == 3 && s->c == 1 && s->h == 2 && s->w == 4 && s->ntasks == 1, "idx: raw pair read as 3 x 1x2x4");
    CHECK(s && memcmp(s->pixels, px, 24) == 0 && s->labels[0] == 2 && s->labels[2] == 1, "idx: pixels and labels");
    td_source_release(s);

    /* gzip: same content */
    gzFile g = gzopen(path_of("img.idx.gz"), "wb");
    gzwrite(g, buf, (unsigned)ni);
    gzclose(g);
    g = gzopen(path_of("lab.idx.gz"), "wb");
    gzwrite(g, buf + 128, (unsigned)nl);
    gzclose(g);
    s = td_idx_source(path_of("img.idx.gz"), path_of("lab.idx.gz"), 10);
    CHECK(s && s->n == 3 && memcmp(s->pixels, px, 24) == 0 && s->labels[1] == 0, "idx: gzip pair reads the same");
    td_source_release(s);

    /* truncated data */
    write_bytes(path_of("trunc.idx"), buf, ni - 5);
    td_idx x;
    int rc = td_idx_read(path_of("trunc.idx"), &x);
    CHECK(rc == -1 && has(td_last_error(), "trunc.idx") && has(td_last_error(), "truncated at byte offset 35"),
          "idx: truncated data names file and offset: %s", td_last_error());
    /* a 57-byte file whose header announces 2^40 elements (issue 22, item 12): refused as
     * truncated, raw or gzip'd, without allocating what it claims */
    {
        uint8_t big[57] = {0, 0, 0x08, 3, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0}; /* 65536 x 65536 x 256 ubyte */
        write_bytes(path_of("huge.idx"), big, sizeof big);
        gzFile hz = gzopen(path_of("huge.idx.gz"), "wb");
        gzwrite(hz, big, sizeof big);
        gzclose(hz);
        const char *names[2] = {"huge.idx", "huge.idx.gz"};
        for (int k = 0; k < 2; k++) {
            rc = td_idx_read(path_of(names[k]), &x);
            CHECK(rc == -1 && has(td_last_error(), names[k]) && has(td_last_error(), "truncated") &&
                      has(td_last_error(), "1099511627776 data bytes"),
                  "idx: %s announcing 2^40 bytes refused as truncated: %s", names[k], td_last_error());
        }
    }
    /* truncated header */
    write_bytes(path_of("trunc_h.idx"), buf, 7);
    rc = td_idx_read(path_of("trunc_h.idx"), &x);
    CHECK(rc == -1 && has(td_last_error(), "trunc_h.idx") && has(td_last_error(), "truncated at byte offset 7"),
          "idx: truncated header: %s", td_last_error());
    /* truncated gzip content */
    g = gzopen(path_of("trunc.idx.gz"), "wb");
    gzwrite(g, buf, (unsigned)ni - 9);
    gzclose(g);
    rc = td_idx_read(path_of("trunc.idx.gz"), &x);
    CHECK(rc == -1 && has(td_last_error(), "truncated at byte offset 31 (decompressed)"), "idx: truncated gzip: %s",
          td_last_error());
    /* a gzip file cut in the middle of its compressed stream */
    size_t gl;
    uint8_t *gz = read_bytes(path_of("img.idx.gz"), &gl);
    write_bytes(path_of("cut.idx.gz"), gz, gl / 2);
    rc = td_idx_read(path_of("cut.idx.gz"), &x);
    CHECK(rc == -1 && has(td_last_error(), "cut.idx.gz"), "idx: cut gzip stream is an error: %s", td_last_error());
    /* flipped bits in the compressed data */
    for (size_t k = 12; k < gl - 8; k++) gz[k] ^= 0x5A;
    write_bytes(path_of("bad.idx.gz"), gz, gl);
    rc = td_idx_read(path_of("bad.idx.gz"), &x);
    CHECK(rc == -1 && has(td_last_error(), "bad.idx.gz"), "idx: corrupt gzip is an error: %s", td_last_error());
    if (rc == 0) td_idx_free(&x);
    free(gz);
    /* wrong magic */
    uint8_t bad[32];
    memcpy(bad, buf, 32);
    bad[0] = 0x1F;
    write_bytes(path_of("magic.idx"), bad, 32);
    rc = td_idx_read(path_of("magic.idx"), &x);
    CHECK(rc == -1 && has(td_last_error(), "magic.idx") && has(td_last_error(), "bad magic number 0x1F000803") &&
              has(td_last_error(), "byte offset 0"),
          "idx: wrong magic: %s", td_last_error());
    memcpy(bad, buf, 32);
    bad[2] = 0x07;
    write_bytes(path_of("type.idx"), bad, 32);
    CHECK(td_idx_read(path_of("type.idx"), &x) == -1 && has(td_last_error(), "bad magic"), "idx: unknown type code");
    /* trailing bytes: sizes disagree */
    uint8_t longer[300];
    memcpy(longer, buf, ni);
    memset(longer + ni, 7, 10);
    write_bytes(path_of("long.idx"), longer, ni + 10);
    rc = td_idx_read(path_of("long.idx"), &x);
    CHECK(rc == -1 && has(td_last_error(), "sizes disagree") && has(td_last_error(), "byte offset 40"),
          "idx: trailing data: %s", td_last_error());
    /* labels and images disagree */
    uint32_t dl2[1] = {2};
    size_t nl2 = idx_bytes(buf + 128, 0x08, 1, dl2, lb, 2);
    write_bytes(path_of("lab2.idx"), buf + 128, nl2);
    s = td_idx_source(path_of("img.idx"), path_of("lab2.idx"), 10);
    CHECK(!s && has(td_last_error(), "sizes disagree") && has(td_last_error(), "lab2.idx") &&
              has(td_last_error(), "img.idx"),
          "idx: label and image counts disagree: %s", td_last_error());
    /* label out of range */
    uint8_t lb3[3] = {1, 12, 0};
    nl2 = idx_bytes(buf + 128, 0x08, 1, dl, lb3, 3);
    write_bytes(path_of("lab3.idx"), buf + 128, nl2);
    s = td_idx_source(path_of("img.idx"), path_of("lab3.idx"), 10);
    CHECK(!s && has(td_last_error(), "label 12 at byte offset 9"), "idx: label out of range: %s", td_last_error());
    /* missing file */
    CHECK(td_idx_read(path_of("nope.idx"), &x) == -1 && has(td_last_error(), "nope.idx"), "idx: missing file");
    /* other element types, big-endian */
    int32_t iv[3] = {-5, 70000, 3};
    uint8_t be[12];
    for (int i = 0; i < 3; i++) {
        uint32_t u = (uint32_t)iv[i];
        be[4 * i] = (uint8_t)(u >> 24);
        be[4 * i + 1] = (uint8_t)(u >> 16);
        be[4 * i + 2] = (uint8_t)(u >> 8);
        be[4 * i + 3] = (uint8_t)u;
    }
    uint32_t d3[1] = {3};
    size_t n3 = idx_bytes(buf, 0x0C, 1, d3, be, 12);
    write_bytes(path_of("int.idx"), buf, n3);
    td_tensor *t = td_idx_load(path_of("int.idx"));
    CHECK(t && t->dtype == TD_I64 && td_i64(t)[0] == -5 && td_i64(t)[1] == 70000 && td_i64(t)[2] == 3,
          "idx: int32 big-endian values");
    td_release(t);
    float fv = 1.5f;
    uint32_t fu;
    memcpy(&fu, &fv, 4);
    uint8_t fb[4] = {(uint8_t)(fu >> 24), (uint8_t)(fu >> 16), (uint8_t)(fu >> 8), (uint8_t)fu};
    uint32_t d1[1] = {1};
    n3 = idx_bytes(buf, 0x0D, 1, d1, fb, 4);
    write_bytes(path_of("float.idx"), buf, n3);
    t = td_idx_load(path_of("float.idx"));
    CHECK(t && t->dtype == TD_F32 && td_f32(t)[0] == 1.5f, "idx: float32 big-endian value");
    td_release(t);
    /* images with a label file instead: wrong rank */
    s = td_idx_source(path_of("lab.idx"), path_of("lab.idx"), 10);
    CHECK(!s && has(td_last_error(), "images must be ubyte (N, H, W)"), "idx: 1-D file as images: %s", td_last_error());
}

static void test_cifar(void) {
    enum { R10 = 3073, R100 = 3074 };
    uint8_t *b = calloc(3, R100);
    for (int r = 0; r < 3; r++) {
        b[r * R10] = (uint8_t)(r * 4); /* labels 0, 4, 8 */
        for (int k = 0; k < 3072; k++) b[r * R10 + 1 + k] = (uint8_t)(k + r);
    }
    write_bytes(path_of("c10_a.bin"), b, 2 * R10);
    write_bytes(path_of("c10_b.bin"), b + 2 * R10, R10);
    const char *paths[2] = {path_of("c10_a.bin"), path_of("c10_b.bin")};
    td_source *s = td_cifar_source(paths, 2, 10);
    CHECK(s && s->n == 3 && s->c == 3 && s->h == 32 && s->ntasks == 1, "cifar10: two files, three records");
    CHECK(s && s->labels[0] == 0 && s->labels[1] == 4 && s->labels[2] == 8, "cifar10: labels");
    CHECK(s && s->pixels[2 * 3072 + 1024] == (uint8_t)(1024 + 2) && s->pixels[5] == 5, "cifar10: pixels (C, H, W)");
    td_source_release(s);
    write_bytes(path_of("c10_cut.bin"), b, 2 * R10 - 100);
    const char *cut[1] = {path_of("c10_cut.bin")};
    s = td_cifar_source(cut, 1, 10);
    CHECK(!s && has(td_last_error(), "c10_cut.bin") && has(td_last_error(), "truncated at byte offset 6046") &&
              has(td_last_error(), "record 1"),
          "cifar10: truncated record: %s", td_last_error());
    b[R10] = 10;
    write_bytes(path_of("c10_lab.bin"), b, 2 * R10);
    const char *lab[1] = {path_of("c10_lab.bin")};
    s = td_cifar_source(lab, 1, 10);
    CHECK(!s && has(td_last_error(), "label 10 at byte offset 3073 (record 1)"), "cifar10: label out of range: %s",
          td_last_error());
    write_bytes(path_of("c10_empty.bin"), b, 0);
    const char *em[1] = {path_of("c10_empty.bin")};
    CHECK(!td_cifar_source(em, 1, 10) && has(td_last_error(), "empty file"), "cifar10: empty file");
    /* CIFAR-100: coarse, fine */
    memset(b, 0, 2 * R100);
    b[0] = 19;
    b[1] = 99;
    b[R100] = 3;
    b[R100 + 1] = 42;
    b[R100 + 2] = 77;
    write_bytes(path_of("c100.bin"), b, 2 * R100);
    const char *p100[1] = {path_of("c100.bin")};
    s = td_cifar_source(p100, 1, 100);
    CHECK(s && s->ntasks == 2 && s->labels[0] == 19 && s->labels[1] == 3 && s->labels[2] == 99 && s->labels[3] == 42 &&
              s->pixels[3072] == 77,
          "cifar100: coarse and fine labels, pixels");
    td_source_release(s);
    b[R100 + 1] = 100;
    write_bytes(path_of("c100b.bin"), b, 2 * R100);
    p100[0] = path_of("c100b.bin");
    CHECK(!td_cifar_source(p100, 1, 100) && has(td_last_error(), "fine label 100 at byte offset 3075"),
          "cifar100: fine label out of range: %s", td_last_error());
    free(b);
}

static void test_celeba(void) {
    const char *attr = "3\nSmiling Male  \n"
                       "a.png -1  1\n"
                       "b.png  1 -1\n"
                       "c.png  1  1\n";
    const char *part = "a.png 0\nb.png 2\nc.png 0\n";
    write_bytes(path_of("attr.txt"), attr, strlen(attr));
    write_bytes(path_of("part.txt"), part, strlen(part));
    td_celeba c;
    int rc = td_celeba_read(path_of("attr.txt"), path_of("part.txt"), 0, &c);
    CHECK(rc == 0 && c.nattr == 2 && c.n == 2 && strcmp(c.images[1], "c.png") == 0 &&
              strcmp(c.attr_names[1], "Male") == 0,
          "celeba: train split of a tiny layout");
    CHECK(rc == 0 && c.labels[0] == 0 && c.labels[1] == 1 && c.labels[2] == 1 && c.labels[3] == 1,
          "celeba: labels 0/1 attribute-major");
    if (rc == 0) td_celeba_free(&c);
    rc = td_celeba_read(path_of("attr.txt"), path_of("part.txt"), 2, &c);
    CHECK(rc == 0 && c.n == 1 && c.labels[0] == 1 && c.labels[1] == 0, "celeba: test split");
    if (rc == 0) td_celeba_free(&c);
    /* a missing attribute row: the count disagrees */
    const char *miss = "3\nSmiling Male\na.png -1 1\nc.png 1 1\n";
    write_bytes(path_of("attr_miss.txt"), miss, strlen(miss));
    rc = td_celeba_read(path_of("attr_miss.txt"), path_of("part.txt"), 0, &c);
    CHECK(rc == -1 && has(td_last_error(), "attr_miss.txt: line 1 announces 3 rows, the file holds 2"),
          "celeba: missing row: %s", td_last_error());
    /* an image of the partition without a row */
    const char *miss2 = "2\nSmiling Male\na.png -1 1\nc.png 1 1\n";
    write_bytes(path_of("attr_miss2.txt"), miss2, strlen(miss2));
    rc = td_celeba_read(path_of("attr_miss2.txt"), path_of("part.txt"), -1, &c);
    CHECK(rc == -1 && has(td_last_error(), "no attribute row for 'b.png' (line 2 of"), "celeba: image without row: %s",
          td_last_error());
    const char *shortrow = "3\nSmiling Male\na.png -1 1\nb.png 1\nc.png 1 1\n";
    write_bytes(path_of("attr_short.txt"), shortrow, strlen(shortrow));
    rc = td_celeba_read(path_of("attr_short.txt"), path_of("part.txt"), 0, &c);
    CHECK(rc == -1 && has(td_last_error(), "line 4: expected 2 values after the image name 'b.png', found 1"),
          "celeba: short row: %s", td_last_error());
    const char *badv = "3\nSmiling Male\na.png -1 1\nb.png 1 0\nc.png 1 1\n";
    write_bytes(path_of("attr_badv.txt"), badv, strlen(badv));
    rc = td_celeba_read(path_of("attr_badv.txt"), path_of("part.txt"), 0, &c);
    CHECK(rc == -1 && has(td_last_error(), "line 4, value 2 (Male): expected -1 or 1, found '0'"),
          "celeba: bad value: %s", td_last_error());
    const char *badp = "a.png 0\nb.png 5\n";
    write_bytes(path_of("part_bad.txt"), badp, strlen(badp));
    rc = td_celeba_read(path_of("attr.txt"), path_of("part_bad.txt"), 0, &c);
    CHECK(rc == -1 && has(td_last_error(), "part_bad.txt: line 2"), "celeba: bad partition line: %s", td_last_error());
}

/* ---- images ---- */
static void test_resize(void) {
    /* fast against the reference, shrinking, growing, mixed, non-integer ratios */
    int sizes[][4] = {{8, 8, 4, 4}, {7, 5, 3, 2}, {3, 4, 7, 9}, {10, 3, 4, 8}, {5, 5, 5, 5}, {218, 178, 64, 64}, {1, 1, 3, 2}};
    int ok = 1;
    double worst = 0;
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        int sh = sizes[k][0], sw = sizes[k][1], dh = sizes[k][2], dw = sizes[k][3], c = 3;
        float *src = malloc(sizeof(float) * sh * sw * c), *a = malloc(sizeof(float) * dh * dw * c),
              *b = malloc(sizeof(float) * dh * dw * c);
        for (int i = 0; i < sh * sw * c; i++) src[i] = (float)((i * 37) % 101) / 100.0f;
        ok &= td_resize_f32(src, sh, sw, c, a, dh, dw) == 0 && td_resize_f32_ref(src, sh, sw, c, b, dh, dw) == 0;
        for (int i = 0; i < dh * dw * c; i++) worst = fmax(worst, fabs(a[i] - b[i]));
        free(src);
        free(a);
        free(b);
    }
    CHECK(ok && worst < 1e-5, "resize: fast kernel equals the reference (max diff %.2g)", worst);
    /* area averaging: 4x4 -> 2x2 gives block means */
    float in[16], out[4];
    for (int i = 0; i < 16; i++) in[i] = (float)i;
    td_resize_f32(in, 4, 4, 1, out, 2, 2);
    CHECK(out[0] == 2.5f && out[1] == 4.5f && out[2] == 10.5f && out[3] == 12.5f, "resize: 2x2 block means");
    /* non-integer shrink 3 -> 2 along a row: output 0 covers [0, 1.5) */
    float r3[3] = {0, 3, 6}, r2[2];
    td_resize_f32(r3, 1, 3, 1, r2, 1, 2);
    CHECK(fabsf(r2[0] - 1.0f) < 1e-6 && fabsf(r2[1] - 5.0f) < 1e-6, "resize: exact area weights 3 -> 2 (%g %g)",
          r2[0], r2[1]);
    /* bilinear growth with half-pixel centres: [0, 1] -> [0, .25, .75, 1] (PyTorch align_corners=False) */
    float g2[2] = {0, 1}, g4[4];
    td_resize_f32(g2, 1, 2, 1, g4, 1, 4);
    CHECK(g4[0] == 0 && g4[1] == 0.25f && g4[2] == 0.75f && g4[3] == 1, "resize: bilinear 2 -> 4");
    /* constant images stay constant; u8 rounding */
    uint8_t cu[6 * 6 * 3], co[4 * 9 * 3];
    memset(cu, 200, sizeof cu);
    td_resize_u8(cu, 6, 6, 3, co, 4, 9);
    int same = 1;
    for (size_t i = 0; i < sizeof co; i++) same &= co[i] == 200;
    CHECK(same, "resize: constant image stays constant (u8)");
    CHECK(td_resize_f32(in, 0, 4, 1, out, 2, 2) == -1 && has(td_last_error(), "resize"), "resize: empty size refused");
}

static void test_images(void) {
    /* a 5x7 RGB image written as PNG reads back exactly */
    int64_t shape[3] = {3, 5, 7};
    td_tensor *t = td_empty(TD_F32, 3, shape);
    for (int i = 0; i < 105; i++) td_f32(t)[i] = (float)((i * 13) % 256) / 255.0f;
    CHECK(td_image_save_png(path_of("a.png"), t) == 0, "png: written");
    td_tensor *r = td_image_load(path_of("a.png"), 3, 0, 0);
    double md = 0;
    for (int i = 0; r && i < 105; i++) md = fmax(md, fabs(td_f32(r)[i] - td_f32(t)[i]));
    CHECK(r && r->shape[0] == 3 && r->shape[1] == 5 && r->shape[2] == 7 && md < 1e-6, "png: round trip exact (%g)", md);
    td_release(r);
    r = td_image_load(path_of("a.png"), 1, 0, 0);
    CHECK(r && r->shape[0] == 1, "png: read as grey");
    td_release(r);
    r = td_image_load(path_of("a.png"), 3, 10, 14);
    CHECK(r && r->shape[1] == 10 && r->shape[2] == 14, "png: read resized to 10x14");
    td_release(r);
    int h, w, c;
    CHECK(td_image_info(path_of("a.png"), &h, &w, &c) == 0 && h == 5 && w == 7 && c == 3, "png: header info");

    /* damaged PNGs: the message names the file and the byte offset */
    size_t n;
    uint8_t *png = read_bytes(path_of("a.png"), &n);
    write_bytes(path_of("cut.png"), png, n - 20);
    uint8_t *px = td_image_decode(path_of("cut.png"), 3, &h, &w, &c);
    CHECK(!px && has(td_last_error(), "cut.png") && has(td_last_error(), "PNG truncated at byte offset"),
          "png: truncated: %s", td_last_error());
    uint8_t *flip = malloc(n);
    memcpy(flip, png, n);
    flip[n - 20] ^= 0xFF; /* inside the last IDAT chunk */
    write_bytes(path_of("flip.png"), flip, n);
    px = td_image_decode(path_of("flip.png"), 3, &h, &w, &c);
    CHECK(!px && has(td_last_error(), "flip.png") && has(td_last_error(), "fails its CRC check") &&
              has(td_last_error(), "at byte offset"),
          "png: flipped byte: %s", td_last_error());
    memcpy(flip, png, n);
    flip[12] = '#'; /* the IHDR chunk's type */
    write_bytes(path_of("type.png"), flip, n);
    px = td_image_decode(path_of("type.png"), 3, &h, &w, &c);
    CHECK(!px && has(td_last_error(), "at byte offset 12: bad chunk type"), "png: bad chunk type: %s", td_last_error());
    free(flip);
    write_bytes(path_of("junk.png"), "hello, not an image at all", 26);
    px = td_image_decode(path_of("junk.png"), 3, &h, &w, &c);
    CHECK(!px && has(td_last_error(), "junk.png") && has(td_last_error(), "byte offset 0"), "image: not an image: %s",
          td_last_error());
    write_bytes(path_of("empty.png"), "", 0);
    CHECK(!td_image_decode(path_of("empty.png"), 3, &h, &w, &c) && has(td_last_error(), "empty file"), "image: empty");
    free(png);

    /* JPEG and BMP through stb_image_write */
    uint8_t rgb[16 * 16 * 3];
    for (int i = 0; i < 16 * 16 * 3; i++) rgb[i] = (uint8_t)(i % 3 == 0 ? 200 : 40);
    stbi_write_jpg(path_of("a.jpg"), 16, 16, 3, rgb, 95);
    px = td_image_decode(path_of("a.jpg"), 3, &h, &w, &c);
    int close_ = px != NULL;
    for (int i = 0; px && i < 16 * 16 * 3; i++) close_ &= abs(px[i] - rgb[i]) < 12;
    CHECK(close_ && h == 16 && w == 16, "jpeg: decodes close to the source");
    free(px);
    uint8_t *jpg = read_bytes(path_of("a.jpg"), &n);
    write_bytes(path_of("cut.jpg"), jpg, n - 30);
    px = td_image_decode(path_of("cut.jpg"), 3, &h, &w, &c);
    CHECK(!px && has(td_last_error(), "cut.jpg") && has(td_last_error(), "JPEG truncated at byte offset"),
          "jpeg: truncated: %s", td_last_error());
    free(jpg);
    stbi_write_bmp(path_of("a.bmp"), 16, 16, 3, rgb);
    px = td_image_decode(path_of("a.bmp"), 3, &h, &w, &c);
    CHECK(px && memcmp(px, rgb, sizeof rgb) == 0, "bmp: exact");
    free(px);
    uint8_t *bmp = read_bytes(path_of("a.bmp"), &n);
    write_bytes(path_of("cut.bmp"), bmp, 40);
    px = td_image_decode(path_of("cut.bmp"), 3, &h, &w, &c);
    CHECK(!px && has(td_last_error(), "cut.bmp") && has(td_last_error(), "byte offset"), "bmp: truncated: %s",
          td_last_error());
    /* cut inside its pixel data: refused, not decoded with the missing rows as zeros */
    write_bytes(path_of("cutrows.bmp"), bmp, n - 3 * 16 * 3);
    px = td_image_decode(path_of("cutrows.bmp"), 3, &h, &w, &c);
    CHECK(!px && has(td_last_error(), "cutrows.bmp") && has(td_last_error(), "truncated") &&
              has(td_last_error(), "16 x 16"),
          "bmp: cut inside the pixel data: %s", px ? "decoded" : td_last_error());
    free(px);
    write_bytes(path_of("cutlast.bmp"), bmp, n - 1);
    px = td_image_decode(path_of("cutlast.bmp"), 3, &h, &w, &c);
    CHECK(!px && has(td_last_error(), "truncated"), "bmp: one byte short: %s", px ? "decoded" : td_last_error());
    free(px);
    free(bmp);

    /* sizes claimed against the file's (issue 22, item 11) */
    bmp = read_bytes(path_of("a.bmp"), &n);
    write_bytes(path_of("short.bmp"), bmp, n - 7); /* the last row cut: loaded as zeros before */
    px = td_image_decode(path_of("short.bmp"), 3, &h, &w, &c);
    CHECK(!px && has(td_last_error(), "short.bmp") && has(td_last_error(), "BMP truncated"), "bmp: missing rows: %s",
          td_last_error());
    bmp[25] ^= 0x40; /* one flipped byte: the height becomes 2^30 + 16 */
    write_bytes(path_of("tall.bmp"), bmp, n);
    px = td_image_decode(path_of("tall.bmp"), 3, &h, &w, &c);
    CHECK(!px && has(td_last_error(), "tall.bmp") && has(td_last_error(), "BMP truncated"),
          "bmp: flipped height byte refused before decoding: %s", td_last_error());
    free(bmp);
    /* an 18-byte TGA header claiming 18175 x 14591 pixels, and one byte */
    uint8_t tga[19] = {0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x7F, 0x47, 0xFF, 0x38, 24, 0, 0};
    write_bytes(path_of("big.tga"), tga, sizeof tga);
    px = td_image_decode(path_of("big.tga"), 3, &h, &w, &c);
    CHECK(!px && has(td_last_error(), "big.tga") && has(td_last_error(), "not a PNG, JPEG or BMP"), "tga: refused: %s",
          td_last_error());
    /* a PNG whose IHDR (CRC fixed) claims 60000 x 60000 pixels from a few IDAT bytes */
    png = read_bytes(path_of("a.png"), &n);
    uint8_t wide[4] = {0, 0, 0xEA, 0x60};
    memcpy(png + 16, wide, 4);
    memcpy(png + 20, wide, 4);
    uint32_t crc = (uint32_t)crc32(0, png + 12, 17);
    uint8_t cb[4] = {(uint8_t)(crc >> 24), (uint8_t)(crc >> 16), (uint8_t)(crc >> 8), (uint8_t)crc};
    memcpy(png + 29, cb, 4);
    write_bytes(path_of("huge.png"), png, n);
    px = td_image_decode(path_of("huge.png"), 3, &h, &w, &c);
    CHECK(!px && has(td_last_error(), "huge.png") && has(td_last_error(), "60000 x 60000"), "png: huge IHDR refused: %s",
          td_last_error());
    free(png);

    /* grid */
    int64_t bs[4] = {3, 1, 2, 2};
    td_tensor *b = td_full(TD_F32, 4, bs, 0.25);
    td_tensor *g = td_image_grid(b, 2, 1, 1.0f);
    CHECK(g && g->shape[0] == 1 && g->shape[1] == 7 && g->shape[2] == 7 && td_f32(g)[0] == 1.0f &&
              td_f32(g)[1 * 7 + 1] == 0.25f && td_f32(g)[4 * 7 + 4] == 1.0f,
          "grid: 3 images in rows of 2 with padding");
    td_release(g);
    td_release(b);
    td_release(t);
}

/* ---- generators ---- */
static void test_synthetic(void) {
    td_source *a = td_synthetic_source(4000, 7), *b = td_synthetic_source(4000, 7), *c = td_synthetic_source(4000, 8);
    CHECK(a && a->n == 4000 && a->c == 3 && a->h == 32 && a->w == 32 && a->ntasks == 4, "synthetic: layout");
    size_t nb = (size_t)4000 * 3 * 32 * 32;
    CHECK(memcmp(a->pixels, b->pixels, nb) == 0 && memcmp(a->labels, b->labels, sizeof(int64_t) * 16000) == 0,
          "synthetic: same seed, same bytes");
    CHECK(memcmp(a->pixels, c->pixels, nb) != 0, "synthetic: another seed, other bytes");
    int fg_ne_bg = 1, in_range = 1, inside = 1, exact_fg = 1;
    int counts[4][16] = {{0}};
    const int nc[4] = {9, 9, 16, 5};
    for (int64_t i = 0; i < a->n; i++) {
        int64_t bg = a->labels[i], fg = a->labels[4000 + i], loc = a->labels[8000 + i], sh = a->labels[12000 + i];
        fg_ne_bg &= bg != fg;
        for (int k = 0; k < 4; k++) {
            int64_t v = a->labels[k * 4000 + i];
            in_range &= v >= 0 && v < nc[k];
            if (v >= 0 && v < 16) counts[k][v]++;
        }
        /* every pixel that is not the background lies in the location's cell and has the fg colour;
         * the count of object pixels equals the shape's mask */
        const uint8_t *p = a->pixels + i * 3072;
        int r0 = (int)(loc / 4) * 8, c0 = (int)(loc % 4) * 8, npx = 0, nmask = 0;
        const uint8_t *m = td_shape_mask((int)sh);
        for (int q = 0; q < 49; q++) nmask += m[q];
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++) {
                int isbg = 1, isfg = 1;
                for (int ch = 0; ch < 3; ch++) {
                    isbg &= p[ch * 1024 + y * 32 + x] == td_palette[bg][ch];
                    isfg &= p[ch * 1024 + y * 32 + x] == td_palette[fg][ch];
                }
                if (!isbg) {
                    npx++;
                    inside &= y >= r0 && y < r0 + 8 && x >= c0 && x < c0 + 8;
                    exact_fg &= isfg;
                }
            }
        inside &= npx == nmask;
    }
    CHECK(fg_ne_bg, "synthetic: foreground never equals background");
    CHECK(in_range, "synthetic: labels in range 9/9/16/5");
    CHECK(inside && exact_fg, "synthetic: the object lies in its grid cell, in the foreground colour, with its mask");
    int all = 1;
    for (int k = 0; k < 4; k++)
        for (int v = 0; v < nc[k]; v++) all &= counts[k][v] > 4000 / nc[k] / 2;
    CHECK(all, "synthetic: every class of every task occurs (balanced within a factor 2)");
    /* the magnified object: scale 1 is the same bytes; at 2 and 3 the labels are the same draws,
     * and each scene has scale^2 x the mask's pixels in the fg colour, inside the object's box
     * (top-left at 4 x 4 places step = (32 - 7 scale - 1) / 3 apart, plus the jitter) */
    td_source *s1 = td_synthetic_source_scaled(4000, 7, 1);
    CHECK(s1 && memcmp(s1->pixels, a->pixels, nb) == 0, "synthetic: scale 1 is the plain generator");
    td_source_release(s1);
    for (int scale = 2; scale <= 3; scale++) {
        td_source *z = td_synthetic_source_scaled(200, 7, scale);
        int size = 7 * scale, step = (32 - size - 1) / 3, ok = z != NULL;
        for (int64_t i = 0; ok && i < 200; i++) {
            ok &= z->labels[i] == a->labels[i] && z->labels[3 * 200 + i] == a->labels[3 * 4000 + i];
            int64_t bg = z->labels[i], loc = z->labels[2 * 200 + i], sh = z->labels[3 * 200 + i];
            int r0 = (int)(loc / 4) * step, c0 = (int)(loc % 4) * step, npx = 0, nmask = 0;
            for (int q = 0; q < 49; q++) nmask += td_shape_mask((int)sh)[q];
            const uint8_t *p = z->pixels + i * 3072;
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++)
                    if (p[y * 32 + x] != td_palette[bg][0] || p[1024 + y * 32 + x] != td_palette[bg][1] ||
                        p[2048 + y * 32 + x] != td_palette[bg][2]) {
                        npx++;
                        ok &= y >= r0 && y <= r0 + size && x >= c0 && x <= c0 + size;
                    }
            ok &= npx == nmask * scale * scale;
        }
        CHECK(ok, "synthetic: object scale %d: same labels, a %dx%d object of scale^2 x its mask's pixels", scale,
              size, size);
        td_source_release(z);
    }
    CHECK(!td_synthetic_source_scaled(10, 7, 4) && has(td_last_error(), "object scale 4"),
          "synthetic: scale 4 refused, named");
    /* shapes stay distinguishable: pairwise mask differences */
    int mind = 49;
    for (int s = 0; s < TD_SHAPES; s++)
        for (int u = s + 1; u < TD_SHAPES; u++) {
            int d = 0;
            for (int q = 0; q < 49; q++) d += td_shape_mask(s)[q] != td_shape_mask(u)[q];
            if (d < mind) mind = d;
        }
    CHECK(mind >= 10, "synthetic: shape masks differ pairwise in >= 10 of 49 pixels (min %d)", mind);
    int pal = 1;
    for (int s = 0; s < TD_PALETTE_SIZE; s++)
        for (int u = s + 1; u < TD_PALETTE_SIZE; u++)
            pal &= abs(td_palette[s][0] - td_palette[u][0]) + abs(td_palette[s][1] - td_palette[u][1]) +
                       abs(td_palette[s][2] - td_palette[u][2]) >= 60;
    CHECK(pal, "synthetic: palette colours are far apart");
    td_source_release(a);
    td_source_release(b);
    td_source_release(c);
}

static void test_cmnist(void) {
    td_source *d = td_source_new_bytes(50, 1, 28, 28, 1, "digits");
    for (int64_t i = 0; i < 50; i++) {
        d->labels[i] = i % 10;
        for (int q = 0; q < 784; q++) d->pixels[i * 784 + q] = (uint8_t)(q % 28 < 14 ? 255 : (q % 28 == 20 ? 128 : 0));
    }
    td_source *s = td_cmnist_source(d, 3), *s2 = td_cmnist_source(d, 3);
    CHECK(s && s->n == 50 && s->c == 3 && s->h == 32 && s->w == 32 && s->ntasks == 3, "cmnist: layout");
    int ok = 1, same = 1;
    uint8_t *a = malloc(3072), *b = malloc(3072);
    for (int64_t i = 0; i < 50; i++) {
        int64_t bg = s->labels[50 + i], fg = s->labels[100 + i];
        ok &= s->labels[i] == i % 10 && bg != fg && bg >= 0 && bg < 9 && fg >= 0 && fg < 9;
        td_source_sample_u8(s, i, a);
        td_source_sample_u8(s2, i, b);
        same &= memcmp(a, b, 3072) == 0;
        for (int ch = 0; ch < 3; ch++) {
            ok &= a[ch * 1024 + 0] == td_palette[bg][ch];               /* padding: background */
            ok &= a[ch * 1024 + 2 * 32 + 2] == td_palette[fg][ch];      /* digit pixel 255 */
            ok &= a[ch * 1024 + 2 * 32 + 2 + 15] == td_palette[bg][ch]; /* digit pixel 0 */
            int mid = (128 * td_palette[fg][ch] + 127 * td_palette[bg][ch] + 127) / 255;
            ok &= a[ch * 1024 + 2 * 32 + 2 + 20] == mid;                /* blend */
        }
    }
    CHECK(ok, "cmnist: digit labels kept, fg != bg, padding in the background colour, blend by grey level");
    CHECK(same, "cmnist: same seed, same colours");
    td_source *pd = td_pad_source(d, 32, 3);
    ok = pd && pd->c == 3 && pd->h == 32 && pd->ntasks == 1 && pd->labels[7] == 7;
    if (pd && td_source_sample_u8(pd, 3, a) == 0)
        for (int ch = 0; ch < 3; ch++)
            ok &= a[ch * 1024] == 0 && a[ch * 1024 + 2 * 32 + 2] == 255 && a[ch * 1024 + 2 * 32 + 2 + 20] == 128;
    CHECK(ok, "pad: grey digits centred on black, copied to 3 channels");
    td_source_release(pd);
    free(a);
    free(b);
    td_source_release(s);
    td_source_release(s2);
    td_source_release(d);
}

/* ---- cache, fill, stats, loader ---- */
static void test_cache(void) {
    td_source *s = td_synthetic_source(100, 1);
    td_kv meta[2] = {{"name", "syn"}, {"tasks", "a,b,c,d"}};
    CHECK(td_source_save(s, path_of("syn.safetensors"), meta, 2, 1) == 0, "cache: saved");
    td_kv *m = NULL;
    int nm = 0;
    td_source *o = td_source_open(path_of("syn.safetensors"), &m, &nm);
    CHECK(o && o->map && o->n == 100 && o->ntasks == 4 && memcmp(o->pixels, s->pixels, 100 * 3072) == 0 &&
              memcmp(o->labels, s->labels, sizeof(int64_t) * 400) == 0,
          "cache: reopened (mmap) with the same bytes and labels");
    int found = 0;
    for (int i = 0; i < nm; i++) found += strcmp(m[i].key, "tasks") == 0 && strcmp(m[i].value, "a,b,c,d") == 0;
    CHECK(found == 1, "cache: metadata kept");
    td_kv_free(m, nm);
    /* a cache file is a safetensors file the core's reader also opens */
    td_named *ts;
    int nt;
    td_kv *m2;
    int nm2;
    int rc = td_safetensors_load(path_of("syn.safetensors"), &ts, &nt, &m2, &nm2);
    CHECK(rc == 0 && nt == 2, "cache: readable by td_safetensors_load");
    if (rc == 0) {
        td_named_free(ts, nt);
        td_kv_free(m2, nm2);
    }
    size_t n;
    uint8_t *b = read_bytes(path_of("syn.safetensors"), &n);
    write_bytes(path_of("cut.safetensors"), b, n - 1000);
    td_source *bad = td_source_open(path_of("cut.safetensors"), NULL, NULL);
    CHECK(!bad && has(td_last_error(), "cut.safetensors") && has(td_last_error(), "sizes disagree"),
          "cache: truncated file refused: %s", td_last_error());
    write_bytes(path_of("tiny.safetensors"), b, 5);
    CHECK(!td_source_open(path_of("tiny.safetensors"), NULL, NULL) && has(td_last_error(), "byte offset"),
          "cache: 5-byte file refused");
    /* a header whose products wrap to 0 (issue 22, item 2): 2^62 samples of 4 bytes, 0 tasks */
    const char *wraps[] = {
        "{\"labels\":{\"dtype\":\"I64\",\"shape\":[0,4611686018427387904],\"data_offsets\":[0,0]},"
        "\"images\":{\"dtype\":\"U8\",\"shape\":[4611686018427387904,1,2,2],\"data_offsets\":[0,0]}}",
        "{\"labels\":{\"dtype\":\"I64\",\"shape\":[0,1],\"data_offsets\":[0,0]},"
        "\"images\":{\"dtype\":\"U8\",\"shape\":[1,4294967297,1,1],\"data_offsets\":[0,1]}}",
    };
    for (int k = 0; k < 2; k++) {
        size_t hl = strlen(wraps[k]);
        uint8_t file[512] = {0};
        memcpy(file, &hl, 8);
        memcpy(file + 8, wraps[k], hl);
        write_bytes(path_of("wrap.safetensors"), file, 8 + hl + 8);
        td_source *w = td_source_open(path_of("wrap.safetensors"), NULL, NULL);
        CHECK(!w && has(td_last_error(), "wrap.safetensors"), "cache: header %d whose sizes wrap refused (%s)", k + 1,
              td_last_error());
        td_source_release(w);
    }
    free(b);
    td_source_release(o);
    td_source_release(s);
}

static void test_fill_loader(void) {
    td_source *s = td_synthetic_source(23, 5);
    int64_t idx[3] = {4, 0, 22};
    float *out = malloc(sizeof(float) * 3 * 3072);
    int64_t lab[12];
    float mean[3] = {0.5f, 0.5f, 0.5f}, sd[3] = {0.5f, 0.25f, 1.0f};
    CHECK(td_source_fill(s, idx, 3, out, lab, mean, sd, 1) == 0, "fill: batch of 3");
    int ok = 1;
    for (int b = 0; b < 3; b++)
        for (int ch = 0; ch < 3; ch++)
            for (int q = 0; q < 1024; q++) {
                float want = (s->pixels[idx[b] * 3072 + ch * 1024 + q] / 255.0f - mean[ch]) / sd[ch];
                ok &= fabsf(out[b * 3072 + ch * 1024 + q] - want) < 1e-5f;
            }
    CHECK(ok, "fill: (byte / 255 - mean) / std per channel");
    CHECK(lab[0] == s->labels[4] && lab[2] == s->labels[22] && lab[3] == s->labels[23 + 4] && lab[11] == s->labels[69 + 22],
          "fill: labels task-major");
    int64_t badi[1] = {23};
    CHECK(td_source_fill(s, badi, 1, out, lab, NULL, NULL, 1) == -1 && has(td_last_error(), "sample id 23"),
          "fill: id out of range refused");
    float zero_sd[3] = {1, 0, 1};
    CHECK(td_source_fill(s, idx, 3, out, lab, NULL, zero_sd, 1) == -1 && has(td_last_error(), "std"),
          "fill: std 0 refused");
    free(out);

    double m[3], sdv[3];
    td_source *k = td_source_new_bytes(2, 1, 1, 2, 0, "k");
    k->pixels[0] = 0;
    k->pixels[1] = 255;
    k->pixels[2] = 255;
    k->pixels[3] = 255;
    CHECK(td_source_stats(k, NULL, 2, m, sdv, 1) == 0 && fabs(m[0] - 0.75) < 1e-12 && fabs(sdv[0] - sqrt(0.1875)) < 1e-12,
          "stats: mean and population std");
    td_source_release(k);

    /* loader: prefetch and synchronous give the same batches in the given order */
    int64_t perm[23];
    for (int i = 0; i < 23; i++) perm[i] = (i * 7) % 23;
    int64_t index[23];
    for (int i = 0; i < 23; i++) index[i] = 22 - i;
    td_loader *lp = td_loader_new(s, index, 23, 5, false, NULL, NULL, true, 1);
    td_loader *ls = td_loader_new(s, index, 23, 5, false, NULL, NULL, false, 1);
    CHECK(lp && ls && td_loader_num_batches(lp) == 5, "loader: 23 samples in batches of 5 -> 5 batches");
    int same = 1, nb = 0, total = 0, labels_ok = 1;
    for (int epoch = 0; epoch < 2; epoch++) {
        td_loader_start(lp, perm, 23);
        td_loader_start(ls, perm, 23);
        int pos = 0;
        td_tensor *xa, *xb, *la[4], *lb[4];
        int ra, rb;
        while ((ra = td_loader_next(lp, &xa, la)) == 1 && (rb = td_loader_next(ls, &xb, lb)) == 1) {
            nb++;
            int64_t B = xa->shape[0];
            total += (int)B;
            same &= B == xb->shape[0] && memcmp(td_f32(xa), td_f32(xb), sizeof(float) * B * 3072) == 0;
            for (int64_t j = 0; j < B; j++) {
                int64_t sid = index[perm[pos + j]];
                labels_ok &= td_i64(la[3])[j] == s->labels[3 * 23 + sid] && td_i64(lb[0])[j] == s->labels[sid];
                labels_ok &= fabsf(td_f32(xa)[j * 3072] - s->pixels[sid * 3072] / 255.0f) < 1e-6f;
            }
            pos += (int)B;
            td_release(xa);
            td_release(xb);
            for (int t = 0; t < 4; t++) {
                td_release(la[t]);
                td_release(lb[t]);
            }
        }
    }
    CHECK(same && nb == 10 && total == 46, "loader: prefetched batches equal synchronous ones (%d batches)", nb);
    CHECK(labels_ok, "loader: batch order follows index[perm[...]], labels with it");
    /* restart in the middle of an epoch, with a job in flight */
    td_loader_start(lp, NULL, 0);
    td_tensor *x, *l4[4];
    td_loader_next(lp, &x, l4);
    td_release(x);
    for (int t = 0; t < 4; t++) td_release(l4[t]);
    CHECK(td_loader_start(lp, perm, 23) == 0 && td_loader_next(lp, &x, l4) == 1 &&
              fabsf(td_f32(x)[0] - s->pixels[index[perm[0]] * 3072] / 255.0f) < 1e-6f,
          "loader: restart mid-epoch begins at the new order's first sample");
    td_release(x);
    for (int t = 0; t < 4; t++) td_release(l4[t]);
    int64_t notperm[23] = {0};
    CHECK(td_loader_start(lp, notperm, 23) == -1 && has(td_last_error(), "not a permutation"), "loader: bad order refused");
    /* an order shorter than the data set was read past its end (issue 22, item 5) */
    CHECK(td_loader_start(lp, perm, 5) == -1 && has(td_last_error(), "5 entries") && has(td_last_error(), "23"),
          "loader: an order of the wrong length refused (%s)", td_last_error());
    td_loader_free(lp); /* a job may be in flight */
    td_loader_free(ls);
    td_loader *ld = td_loader_new(s, NULL, 23, 5, true, NULL, NULL, true, 1);
    CHECK(td_loader_num_batches(ld) == 4, "loader: drop_last -> 4 batches");
    td_loader_start(ld, NULL, 0);
    int cnt = 0;
    while (td_loader_next(ld, &x, l4) == 1) {
        cnt += x->shape[0] == 5;
        td_release(x);
        for (int t = 0; t < 4; t++) td_release(l4[t]);
    }
    CHECK(cnt == 4, "loader: drop_last batches are all full");
    td_loader_free(ld);
    CHECK(!td_loader_new(s, NULL, 23, 0, false, NULL, NULL, true, 1) && has(td_last_error(), "batch size"),
          "loader: batch size 0 refused");
    td_source_release(s);
}

static void test_files(void) {
    /* a folder of PNGs with one damaged file: the loader's worker reports it by name */
    int64_t shape[3] = {3, 6, 6};
    const char *names[4] = {"f0.png", "f1.png", "f2.png", "f3.png"};
    const char *paths[4];
    int64_t labels[4] = {0, 1, 0, 1};
    for (int i = 0; i < 4; i++) {
        td_tensor *t = td_full(TD_F32, 3, shape, i / 4.0);
        paths[i] = strdup(path_of(names[i]));
        td_image_save_png(paths[i], t);
        td_release(t);
    }
    td_source *s = td_source_new_files(paths, 4, labels, 1, 3, 3, 3, dir);
    uint8_t px[27];
    CHECK(s && td_source_sample_u8(s, 2, px) == 0 && px[0] == 128 && px[26] == 128, "files: decoded and resized to 3x3");
    double m[3], sd[3];
    CHECK(td_source_stats(s, NULL, 4, m, sd, 1) == 0 && fabs(m[1] - (0 + 64 + 128 + 191) / 4.0 / 255) < 1e-9,
          "files: stats over decoded images");
    CHECK(td_source_save(s, path_of("files.safetensors"), NULL, 0, 2) == 0, "files: saved to a cache file (2 threads)");
    td_source *o = td_source_open(path_of("files.safetensors"), NULL, NULL);
    CHECK(o && o->n == 4 && o->h == 3 && o->pixels[3 * 27] == 191 && o->labels[3] == 1, "files: cache holds the decoded bytes");
    td_source_release(o);
    write_bytes(paths[3], "\x89PNG\r\n\x1a\n\0\0", 10);
    td_loader *l = td_loader_new(s, NULL, 4, 2, false, NULL, NULL, true, 2);
    td_loader_start(l, NULL, 0);
    td_tensor *x, *lab[1];
    int r1 = td_loader_next(l, &x, lab);
    if (r1 == 1) {
        td_release(x);
        td_release(lab[0]);
    }
    int r2 = td_loader_next(l, &x, lab);
    CHECK(r1 == 1 && r2 == -1 && has(td_last_error(), "f3.png") && has(td_last_error(), "byte offset"),
          "files: a damaged PNG in the second batch: %s", td_last_error());
    CHECK(td_loader_next(l, &x, lab) == 0, "files: the epoch ends after the error");
    td_loader_free(l);
    CHECK(td_source_save(s, path_of("files2.safetensors"), NULL, 0, 1) == -1 && has(td_last_error(), "f3.png"),
          "files: saving reports the damaged file");
    CHECK(access(path_of("files2.safetensors"), F_OK) != 0, "files: no partial cache file left");
    td_source_release(s);
    for (int i = 0; i < 4; i++) free((void *)paths[i]);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/tdrl_test_data_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_idx();
    test_cifar();
    test_celeba();
    test_resize();
    test_images();
    test_synthetic();
    test_cmnist();
    test_cache();
    test_fill_loader();
    test_files();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return check_failures;
}
