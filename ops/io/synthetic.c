/* Generated data sets with known features.
 *
 * Synthetic: a 32 x 32 RGB scene filled with a background colour, one 7 x 7 object in a
 * foreground colour (never the background's) inside one cell of a 4 x 4 grid of 8 x 8 cells,
 * shifted by 0 or 1 pixel in each direction within its cell (so location stays exact).
 * Colored-MNIST: a grey MNIST digit padded from 28 x 28 to 32 x 32 and blended per pixel from a
 * background colour to a foreground colour by its intensity.
 * Both draw their labels from xoshiro256** (random.c) seeded with the given seed, in a fixed
 * order, so a seed gives the same bytes everywhere. */
#include "data.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const uint8_t td_palette[TD_PALETTE_SIZE][3] = {
    {0, 0, 0},       /* black */
    {255, 255, 255}, /* white */
    {230, 25, 25},   /* red */
    {30, 190, 60},   /* green */
    {30, 80, 230},   /* blue */
    {250, 220, 30},  /* yellow */
    {220, 40, 220},  /* magenta */
    {40, 220, 230},  /* cyan */
    {250, 130, 20},  /* orange */
};
const char *const td_palette_names[TD_PALETTE_SIZE] = {"black",  "white",   "red",  "green", "blue",
                                                       "yellow", "magenta", "cyan", "orange"};
const char *const td_shape_names[TD_SHAPES] = {"square", "circle", "triangle", "cross", "diamond"};

static const char *const shape_art[TD_SHAPES][TD_SHAPE_SIZE] = {
    {"#######", "#######", "#######", "#######", "#######", "#######", "#######"},
    {"..###..", ".#####.", "#######", "#######", "#######", ".#####.", "..###.."},
    {"...#...", "..###..", "..###..", ".#####.", ".#####.", "#######", "#######"},
    {"##...##", "###.###", ".#####.", "..###..", ".#####.", "###.###", "##...##"},
    {"...#...", "..###..", ".#####.", "#######", ".#####.", "..###..", "...#..."},
};
static uint8_t masks[TD_SHAPES][TD_SHAPE_SIZE * TD_SHAPE_SIZE];
static pthread_once_t masks_once = PTHREAD_ONCE_INIT;

static void masks_init(void) {
    for (int s = 0; s < TD_SHAPES; s++)
        for (int y = 0; y < TD_SHAPE_SIZE; y++)
            for (int x = 0; x < TD_SHAPE_SIZE; x++) masks[s][y * TD_SHAPE_SIZE + x] = shape_art[s][y][x] == '#';
}

const uint8_t *td_shape_mask(int shape) {
    if (shape < 0 || shape >= TD_SHAPES) return NULL;
    pthread_once(&masks_once, masks_init);
    return masks[shape];
}

enum { SYN = 32, GRID = 4 };

td_source *td_synthetic_source(int64_t n, uint64_t seed) { return td_synthetic_source_scaled(n, seed, 1); }

td_source *td_synthetic_source_scaled(int64_t n, uint64_t seed, int scale) {
    if (n < 0 || n > ((int64_t)1 << 31)) return td_fail("synthetic: number of samples %lld out of range", (long long)n);
    if (scale < 1 || scale > 3) return td_fail("synthetic: object scale %d out of range (1, 2 or 3)", scale);
    /* the object is the 7 x 7 art magnified scale times; its top-left corner takes one of 4 x 4
     * places `step` pixels apart (8 at scale 1: the cells), plus the 1-pixel jitter */
    int size = TD_SHAPE_SIZE * scale, step = (SYN - size - 1) / (GRID - 1);
    td_source *s = td_source_new_bytes(n, 3, SYN, SYN, 4, "synthetic");
    if (!s) return NULL;
    td_generator g;
    td_generator_seed(&g, seed);
    int64_t *bg_l = s->labels, *fg_l = s->labels + n, *loc_l = s->labels + 2 * n, *sh_l = s->labels + 3 * n;
    for (int64_t i = 0; i < n; i++) {
        int bg = (int)(td_rand_u64(&g) % TD_PALETTE_SIZE);
        int fg = (int)(td_rand_u64(&g) % (TD_PALETTE_SIZE - 1));
        if (fg >= bg) fg++;
        int loc = (int)(td_rand_u64(&g) % (GRID * GRID));
        int shape = (int)(td_rand_u64(&g) % TD_SHAPES);
        uint64_t j = td_rand_u64(&g);
        int dx = (int)(j & 1), dy = (int)((j >> 1) & 1);
        bg_l[i] = bg;
        fg_l[i] = fg;
        loc_l[i] = loc;
        sh_l[i] = shape;
        uint8_t *px = s->pixels + i * 3 * SYN * SYN;
        const uint8_t *m = td_shape_mask(shape);
        int y0 = (loc / GRID) * step + dy, x0 = (loc % GRID) * step + dx;
        for (int c = 0; c < 3; c++) {
            uint8_t *p = px + c * SYN * SYN;
            memset(p, td_palette[bg][c], SYN * SYN);
            for (int y = 0; y < size; y++)
                for (int x = 0; x < size; x++)
                    if (m[(y / scale) * TD_SHAPE_SIZE + x / scale]) p[(y0 + y) * SYN + x0 + x] = td_palette[fg][c];
        }
    }
    return s;
}

td_source *td_cmnist_source(td_source *digits, uint64_t seed) {
    if (digits->kind != TD_SRC_BYTES || digits->c != 1 || digits->ntasks < 1 || digits->h > 32 || digits->w > 32)
        return td_fail("cmnist: needs grey digits (N, 1, H, W) with H, W <= 32 and a digit label; %s is %dx%dx%d with "
                       "%d tasks",
                       digits->what, digits->c, digits->h, digits->w, digits->ntasks);
    int64_t n = digits->n;
    td_source *s = calloc(1, sizeof *s);
    int64_t *labels = malloc(sizeof(int64_t) * 3 * (size_t)(n ? n : 1));
    char *what = malloc(strlen(digits->what) + 16);
    if (!s || !labels || !what) {
        free(s);
        free(labels);
        free(what);
        return td_fail("cmnist: out of memory");
    }
    snprintf(what, strlen(digits->what) + 16, "cmnist(%s)", digits->what);
    s->refcount = 1;
    s->kind = TD_SRC_CMNIST;
    s->n = n;
    s->c = 3;
    s->h = 32;
    s->w = 32;
    s->ntasks = 3;
    s->labels = labels;
    s->what = what;
    s->base = digits;
    s->bg_task = 1;
    s->fg_task = 2;
    td_source_retain(digits);
    td_generator g;
    td_generator_seed(&g, seed);
    memcpy(labels, digits->labels, sizeof(int64_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        int bg = (int)(td_rand_u64(&g) % TD_PALETTE_SIZE);
        int fg = (int)(td_rand_u64(&g) % (TD_PALETTE_SIZE - 1));
        if (fg >= bg) fg++;
        labels[n + i] = bg;
        labels[2 * n + i] = fg;
    }
    return s;
}

td_source *td_pad_source(td_source *grey, int size, int channels) {
    if (grey->kind != TD_SRC_BYTES || grey->c != 1 || grey->h > size || grey->w > size || size > 4096)
        return td_fail("pad: needs grey images (N, 1, H, W) with H, W <= %d; %s is %dx%dx%d", size, grey->what,
                       grey->c, grey->h, grey->w);
    if (channels != 1 && channels != 3) return td_fail("pad: channels must be 1 or 3, not %d", channels);
    int64_t n = grey->n;
    td_source *s = calloc(1, sizeof *s);
    int64_t *labels = malloc(sizeof(int64_t) * (size_t)(grey->ntasks * n + 1));
    char *what = malloc(strlen(grey->what) + 16);
    if (!s || !labels || !what) {
        free(s);
        free(labels);
        free(what);
        return td_fail("pad: out of memory");
    }
    snprintf(what, strlen(grey->what) + 16, "pad(%s)", grey->what);
    if (grey->ntasks) memcpy(labels, grey->labels, sizeof(int64_t) * (size_t)(grey->ntasks * n));
    s->refcount = 1;
    s->kind = TD_SRC_CMNIST;
    s->n = n;
    s->c = channels;
    s->h = size;
    s->w = size;
    s->ntasks = grey->ntasks;
    s->labels = labels;
    s->what = what;
    s->base = grey;
    s->bg_task = -1;
    s->fg_task = -1;
    td_source_retain(grey);
    return s;
}
