/* libtdrl data sets: image decoding and resizing (image.c), IDX (idx.c), CIFAR binary batches
 * (cifar.c), the Synthetic and Colored-MNIST generators (synthetic.c), and sources, the data
 * cache and the prefetching loader (dataset.c). C11, no Lua inside.
 *
 * A source is N samples of C x H x W 8-bit pixels with K integer label columns ("tasks"). Kinds:
 *   BYTES  pixels in memory (malloc'd, or mmap'd from a cache file),
 *   FILES  image files decoded (and resized) when a sample is read,
 *   CMNIST grey digits of a BYTES source coloured on the fly with per-sample colours.
 * Reading a batch produces float32 (B, C, H, W) with value = (byte / 255 - mean[c]) / std[c] and
 * int64 labels. Filling a batch allocates no tensor and is safe from any thread (the loader's
 * worker calls it); everything else runs on the caller's thread.
 *
 * Errors follow tensor.h: NULL / -1 and a message in td_last_error() naming the file and the
 * position (byte offset or line) where a file is at fault.
 *
 * Link needs: -lstb (Debian libstb-dev: stb_image, stb_image_write) and -lz (zlib1g-dev). */
#ifndef TDRL_DATA_H
#define TDRL_DATA_H

#include "../tensor.h"

/* ---- images (image.c) ------------------------------------------------------------------------ */
/* Decodes PNG / JPEG / BMP / GIF / TGA / PNM into 8-bit interleaved H x W x channels (channels 1:
 * grey, 3: RGB; 0: 1 if the file is grey, else 3). Returns malloc'd pixels (free()) or NULL. */
uint8_t *td_image_decode(const char *path, int channels, int *h, int *w, int *c_out);
uint8_t *td_image_decode_mem(const void *buf, size_t len, const char *what, int channels, int *h, int *w,
                             int *c_out);
/* Header only: size and channel count as stored. 0 or -1. */
int td_image_info(const char *path, int *h, int *w, int *c);

/* Resizes interleaved images (c channels): along an axis that shrinks each output pixel is the
 * exact area average of the input pixels it covers; along an axis that grows, bilinear with
 * half-pixel centres (PyTorch's align_corners=False). Equal sizes copy. */
int td_resize_u8(const uint8_t *src, int sh, int sw, int c, uint8_t *dst, int dh, int dw);
int td_resize_f32(const float *src, int sh, int sw, int c, float *dst, int dh, int dw);
/* The reference version (one output pixel at a time, straight from the definition). */
int td_resize_f32_ref(const float *src, int sh, int sw, int c, float *dst, int dh, int dw);

/* (C, H, W) float in [0, 1]; h = w = 0 keeps the stored size. channels as td_image_decode. */
td_tensor *td_image_load(const char *path, int channels, int h, int w);
/* (C, H, W) or (B, C, H, W) float -> same layout at (h, w); not differentiable. */
td_tensor *td_image_resize(td_tensor *img, int64_t h, int64_t w);
/* Writes (C, H, W) (C = 1, 3 or 4) or (H, W) float values in [0, 1] (clamped) as an 8-bit PNG. */
int td_image_save_png(const char *path, td_tensor *img);
/* PNG file bytes (stb_image_write) of h rows of w pixels of c (1-4) 8-bit channels, interleaved;
 * malloc'd (free it), length in *len; NULL with the error set. */
uint8_t *td_png_encode(const uint8_t *px, int w, int h, int c, size_t *len);
/* (B, C, H, W) -> (C, rows*(H+pad)+pad, nrow*(W+pad)+pad) tiled grid, pad filled with pad_value. */
td_tensor *td_image_grid(td_tensor *imgs, int nrow, int pad, float pad_value);

/* ---- sources (dataset.c) --------------------------------------------------------------------- */
typedef enum { TD_SRC_BYTES = 0, TD_SRC_FILES = 1, TD_SRC_CMNIST = 2 } td_source_kind;
#define TD_SRC_MAX_TASKS 64

typedef struct td_source {
    int refcount;
    td_source_kind kind;
    int64_t n;
    int c, h, w;
    int ntasks;
    int64_t *labels; /* ntasks x n (task-major), malloc'd */
    char *what;      /* where it came from, for messages (malloc'd) */
    /* BYTES: n x c x h x w */
    uint8_t *pixels;
    void *map;       /* non-NULL: pixels lie inside this mmap'd file */
    size_t map_len;
    /* FILES */
    char **paths;    /* n malloc'd paths */
    /* CMNIST: base is a BYTES source of grey digits (n, 1, bh, bw) padded into (c, h, w);
     * the colours come from label columns bg_task and fg_task of this source (-1: black
     * background, white foreground: plain padding, grey copied to every channel). */
    struct td_source *base;
    int bg_task, fg_task;
} td_source;

/* A BYTES source with pixels and labels allocated (zeroed) for the caller to fill. */
td_source *td_source_new_bytes(int64_t n, int c, int h, int w, int ntasks, const char *what);
/* FILES: paths (n), labels (ntasks x n, copied); each image decoded to c channels, resized to h x w. */
td_source *td_source_new_files(const char *const *paths, int64_t n, const int64_t *labels, int ntasks, int c,
                               int h, int w, const char *what);
void td_source_retain(td_source *s);
void td_source_release(td_source *s); /* NULL-safe */

/* Sample i as c x h x w bytes into dst. 0 or -1. Thread-safe. */
int td_source_sample_u8(const td_source *s, int64_t i, uint8_t *dst);
/* Batch of n samples with source ids idx: out (n, c, h, w) float, labels (ntasks, n) int64 (either
 * may be NULL). mean / std: c values each or NULL for 0 / 1. nthreads > 1 decodes files in
 * parallel. Thread-safe; allocates no tensor. */
int td_source_fill(const td_source *s, const int64_t *idx, int64_t n, float *out, int64_t *labels,
                   const float *mean, const float *std, int nthreads);
/* Per-channel mean and standard deviation (population, of byte / 255) over idx (NULL: all). */
int td_source_stats(const td_source *s, const int64_t *idx, int64_t n, double *mean, double *std, int nthreads);
/* Checks that every label of task k lies in [0, nclasses); the error names the source and sample. */
int td_source_check_labels(const td_source *s, int task, int64_t nclasses);

/* The data cache: a safetensors file holding "labels" (I64, ntasks x n) and "images" (U8, n x c x
 * h x w) plus string metadata; written atomically (temporary file, then rename). Every kind of
 * source can be saved (files are decoded, nthreads at a time). */
int td_source_save(const td_source *s, const char *path, const td_kv *meta, int n_meta, int nthreads);
/* Opens a cache file: images are mmap'd (opened instantly), labels copied. Metadata through
 * *meta / *n_meta (free with td_kv_free) when meta is non-NULL. */
td_source *td_source_open(const char *path, td_kv **meta, int *n_meta);

/* ---- readers (idx.c, cifar.c) ------------------------------------------------------------------ */
typedef enum {
    TD_IDX_U8 = 0x08, TD_IDX_I8 = 0x09, TD_IDX_I16 = 0x0B, TD_IDX_I32 = 0x0C, TD_IDX_F32 = 0x0D, TD_IDX_F64 = 0x0E
} td_idx_type;
typedef struct td_idx {
    td_idx_type type;
    int ndim;
    int64_t dims[TD_MAX_DIMS];
    void *data;   /* malloc'd, host byte order */
    size_t nbytes;
} td_idx;
/* Reads an IDX file, raw or gzip-compressed. Positions in messages are byte offsets of the
 * (decompressed) content. */
int td_idx_read(const char *path, td_idx *out);
void td_idx_free(td_idx *x);
/* Any IDX file as a tensor: float types -> float32, integer types -> int64. */
td_tensor *td_idx_load(const char *path);
/* Images (n, h, w) ubyte and labels (n) ubyte -> a BYTES source (n, 1, h, w) with one task;
 * nclasses > 0 checks the label range. */
td_source *td_idx_source(const char *images, const char *labels, int64_t nclasses);

/* CIFAR binary batches: variant 10 (records: label, 3072 pixels) or 100 (coarse, fine, 3072
 * pixels). Tasks: CIFAR-10 {label}; CIFAR-100 {coarse, fine}. */
td_source *td_cifar_source(const char *const *paths, int npaths, int variant);

/* CelebA's list files (celeba.c): list_attr_celeba.txt (row count, attribute names, rows of
 * "<image> -1|1 ...") and list_eval_partition.txt (rows of "<image> 0|1|2"). Selects the images
 * of one split (0 train, 1 validation, 2 test; -1 all) in partition order, with labels 0/1. */
typedef struct td_celeba {
    int nattr;
    char **attr_names; /* nattr */
    int64_t n;
    char **images;     /* n image file names */
    int64_t *labels;   /* nattr x n (attribute-major), 1 where the attribute is present */
} td_celeba;
int td_celeba_read(const char *attr_path, const char *partition_path, int split, td_celeba *out);
void td_celeba_free(td_celeba *c);

/* ---- generated sets (synthetic.c) -------------------------------------------------------------- */
#define TD_PALETTE_SIZE 9
#define TD_SHAPES 5
#define TD_SHAPE_SIZE 7
extern const uint8_t td_palette[TD_PALETTE_SIZE][3];
extern const char *const td_palette_names[TD_PALETTE_SIZE];
extern const char *const td_shape_names[TD_SHAPES];
/* 7 x 7 mask of a shape (1 inside). */
const uint8_t *td_shape_mask(int shape);
/* Synthetic: n scenes 3 x 32 x 32; tasks background (9), foreground (9, never the background),
 * location (16: the 4 x 4 grid of 8 x 8 cells, row-major), shape (5). Same seed, same bytes. */
td_source *td_synthetic_source(int64_t n, uint64_t seed);
/* The same scenes with the object magnified scale times (1-3: 7, 14 or 21 pixels wide), its 4 x 4
 * places spread evenly over the scene; scale 1 is td_synthetic_source. */
td_source *td_synthetic_source_scaled(int64_t n, uint64_t seed, int scale);
/* Colored-MNIST over a grey digit source (n, 1, 28, 28; task 0 = digit): digits padded to 32 x 32,
 * a foreground colour (9) on a background colour (9, never the foreground); tasks digit,
 * background, foreground; colours drawn from seed. */
td_source *td_cmnist_source(td_source *digits, uint64_t seed);
/* Grey images (N, 1, H, W) centred in (channels, size, size) (channels 1 or 3: grey repeated),
 * padded with black; same labels. */
td_source *td_pad_source(td_source *grey, int size, int channels);

/* ---- loader (dataset.c) ------------------------------------------------------------------------ */
/* Batches over positions 0..n-1 of index (source ids), in the order given at each start; the
 * next batch is produced by a worker thread while the caller uses the current one. */
typedef struct td_loader td_loader;
td_loader *td_loader_new(td_source *s, const int64_t *index, int64_t n, int64_t batch, bool drop_last,
                         const float *mean, const float *std, bool prefetch, int nthreads);
int64_t td_loader_num_batches(const td_loader *l);
/* Starts an epoch; perm: n positions (a permutation of 0..n-1) or NULL for the stored order. */
int td_loader_start(td_loader *l, const int64_t *perm, int64_t n_perm); /* perm: n_perm == the set size, or NULL */
/* 1 and new references in *x (B, C, H, W) and labels[0..ntasks-1] (B); 0 at the end of the epoch;
 * -1 on error (the worker's message). */
int td_loader_next(td_loader *l, td_tensor **x, td_tensor **labels);
void td_loader_free(td_loader *l); /* NULL-safe; waits for the worker */

#endif
