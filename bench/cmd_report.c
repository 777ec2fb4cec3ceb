/* `clattn report`: bench result files from several machines merged into one table (one row per
 * case, dtype and algorithm; per device its time, the share of its own measured peak, and its
 * speed-up over a baseline device) and one chart, each file's provenance kept and whatever makes
 * the columns less comparable flagged: commits that differ, modified trees, cases missing on a
 * device, cells a later file replaced, rows above their device's peak. */
#include "cli.h"
#include "report.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILES 32
#define MAX_COLS 16
#define MAX_ROWS 1024

typedef struct src_file {
    const char *path;
    char commit[64], date[40], version[32], command[512];
} src_file;

typedef struct cell {
    bool have;
    int file;                   /* the file that gave it: the last one given wins */
    char status[16];
    double ms, gflops, gbs;
    double peak_fma, peak_read; /* the device's peaks in that file */
} cell;

typedef struct column {
    char name[256];
    char drivers[256];  /* every driver seen, comma-separated */
    char peaks[256];    /* "214.9 GFLOP/s, 19.8 GB/s" per file, distinct */
    int superseded;     /* cells a later file replaced */
    char replaced[512]; /* the files whose cells were replaced */
} column;

typedef struct merged_row {
    int id;
    char shape[64], dtype[8], algo[24];
    cell cells[MAX_COLS];
} merged_row;

typedef struct merge {
    src_file files[MAX_FILES];
    int nfiles;
    column cols[MAX_COLS];
    int ncols;
    merged_row *rows;
    int nrows;
    int baseline;
    bool want_algo[3];  /* fused, unfused, reference */
} merge;

/* ---- reading ---- */

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return cli_error("report: %s: %s", path, strerror(errno)), NULL;
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 65536 + 1 > cap) {
            cap = cap ? 2 * cap : 1 << 20;
            char *t = realloc(text, cap);
            if (!t) break;
            text = t;
        }
        const size_t got = fread(text + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) break;
    }
    const bool failed = ferror(f) || !text;
    fclose(f);
    if (failed) {
        free(text);
        return cli_error("report: cannot read %s", path), NULL;
    }
    text[len] = '\0';
    return text;
}

static const char *str_or(const cJSON *o, const char *key, const char *fallback)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(x) ? x->valuestring : fallback;
}

/* A number, or NAN for null / absent. */
static double num_or_nan(const cJSON *o, const char *key)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

static int algo_index(const char *algo)
{
    char base[24];
    snprintf(base, sizeof base, "%s", algo);
    char *space = strchr(base, ' '); /* "fused bwd": the backward's row of an algorithm */
    if (space) *space = '\0';
    algo = base;
    return !strcmp(algo, "fused") ? 0 : !strcmp(algo, "unfused") ? 1 : !strcmp(algo, "reference") ? 2 : -1;
}

/* Appends `item` to a comma-separated list unless it is there already. */
static void add_distinct(char *list, size_t size, const char *item)
{
    for (const char *p = list; (p = strstr(p, item)); p += strlen(item)) {
        const bool starts = p == list || (p >= list + 2 && p[-2] == ',' && p[-1] == ' ');
        const char end = p[strlen(item)];
        if (starts && (end == '\0' || end == ',')) return;
    }
    const size_t used = strlen(list);
    snprintf(list + used, size - used, "%s%s", used ? ", " : "", item);
}

static int column_of(merge *m, const char *device)
{
    for (int c = 0; c < m->ncols; c++)
        if (!strcmp(m->cols[c].name, device)) return c;
    if (m->ncols == MAX_COLS) return cli_error("report: more than %d devices", MAX_COLS), -1;
    column *col = &m->cols[m->ncols];
    memset(col, 0, sizeof *col);
    snprintf(col->name, sizeof col->name, "%s", device);
    return m->ncols++;
}

static int row_of(merge *m, int id, const char *shape, const char *dtype, const char *algo)
{
    for (int r = 0; r < m->nrows; r++) {
        const merged_row *w = &m->rows[r];
        if (w->id == id && !strcmp(w->shape, shape) && !strcmp(w->dtype, dtype) && !strcmp(w->algo, algo)) return r;
    }
    if (m->nrows == MAX_ROWS) return cli_error("report: more than %d rows", MAX_ROWS), -1;
    merged_row *w = &m->rows[m->nrows];
    memset(w, 0, sizeof *w);
    w->id = id;
    snprintf(w->shape, sizeof w->shape, "%s", shape);
    snprintf(w->dtype, sizeof w->dtype, "%s", dtype);
    snprintf(w->algo, sizeof w->algo, "%s", algo);
    return m->nrows++;
}

/* The device entry of a row (its device_index in the file's devices), or NULL. */
static const cJSON *device_of(const cJSON *devices, int index)
{
    const cJSON *d;
    cJSON_ArrayForEach(d, devices)
    {
        const cJSON *i = cJSON_GetObjectItemCaseSensitive(d, "index");
        if (cJSON_IsNumber(i) && i->valueint == index) return d;
    }
    return NULL;
}

/* One result row into its cell; 0, or 1 after printing what the row lacks. */
static int add_row(merge *m, int file, const cJSON *devices, const cJSON *row, int n)
{
    static const char *numbers[] = {"case", "device_index"};
    static const char *strings[] = {"shape", "dtype", "algo", "device", "status"};
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++)
        if (!cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(row, numbers[i])))
            return cli_error("report: %s: row %d has no number '%s'", m->files[file].path, n, numbers[i]);
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++)
        if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(row, strings[i])))
            return cli_error("report: %s: row %d has no string '%s'", m->files[file].path, n, strings[i]);
    const char *base = str_or(row, "algo", "");
    const int a = algo_index(base);
    if (a < 0) return cli_error("report: %s: row %d has an unknown algo '%s'", m->files[file].path, n, base);
    if (!m->want_algo[a]) return 0;
    /* a backward row (format 2 and later) is its own row of the table: "fused bwd" */
    char algo[24];
    snprintf(algo, sizeof algo, "%s%s", base, !strcmp(str_or(row, "pass", "forward"), "backward") ? " bwd" : "");
    const char *device = str_or(row, "device", "?");
    const int c = column_of(m, device);
    const int r = c < 0 ? -1 : row_of(m, (int)num_or_nan(row, "case"), str_or(row, "shape", "?"),
                                      str_or(row, "dtype", "?"), algo);
    if (r < 0) return 1;
    cell *x = &m->rows[r].cells[c];
    if (x->have) {
        m->cols[c].superseded++;
        add_distinct(m->cols[c].replaced, sizeof m->cols[c].replaced, m->files[x->file].path);
    }
    const cJSON *dev = a == 2 ? NULL : device_of(devices, (int)num_or_nan(row, "device_index"));
    x->have = true;
    x->file = file;
    snprintf(x->status, sizeof x->status, "%s", str_or(row, "status", "?"));
    x->ms = num_or_nan(row, "ms_median");
    x->gflops = num_or_nan(row, "gflops");
    x->gbs = num_or_nan(row, "gbs");
    x->peak_fma = dev ? num_or_nan(dev, "peak_fma_gflops") : NAN;
    x->peak_read = dev ? num_or_nan(dev, "peak_read_gbs") : NAN;
    if (dev) {
        char peaks[96];
        add_distinct(m->cols[c].drivers, sizeof m->cols[c].drivers, str_or(dev, "driver", "?"));
        snprintf(peaks, sizeof peaks, "%.1f GFLOP/s, %.1f GB/s", x->peak_fma, x->peak_read);
        add_distinct(m->cols[c].peaks, sizeof m->cols[c].peaks, peaks);
    }
    return 0;
}

static int load_file(merge *m, const char *path)
{
    if (m->nfiles == MAX_FILES) return cli_error("report: at most %d files", MAX_FILES);
    char *text = read_text(path);
    if (!text) return 1;
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "format_version");
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(root, "rows");
    const cJSON *devices = cJSON_GetObjectItemCaseSensitive(root, "devices");
    const cJSON *prov = cJSON_GetObjectItemCaseSensitive(root, "provenance");
    if (!cJSON_IsNumber(ver) || ver->valueint < 1 || ver->valueint > BENCH_FORMAT_VERSION || !cJSON_IsArray(rows) ||
        !cJSON_IsArray(devices) || !cJSON_IsObject(prov)) {
        cJSON_Delete(root);
        return cli_error("report: %s is not a clattn bench JSON of format version 1..%d", path, BENCH_FORMAT_VERSION);
    }
    const int f = m->nfiles++;
    src_file *s = &m->files[f];
    s->path = path;
    snprintf(s->commit, sizeof s->commit, "%s", str_or(prov, "commit", "?"));
    snprintf(s->date, sizeof s->date, "%s", str_or(prov, "date", "?"));
    snprintf(s->version, sizeof s->version, "%s", str_or(prov, "clattn_version", "?"));
    snprintf(s->command, sizeof s->command, "%s", str_or(prov, "command", "?"));
    int n = 0, rc = 0;
    const cJSON *row;
    cJSON_ArrayForEach(row, rows)
    {
        if ((rc = add_row(m, f, devices, row, n++))) break;
    }
    cJSON_Delete(root);
    return rc;
}

/* ---- figures of a cell ---- */

static bool cell_ok(const cell *x) { return x->have && !strcmp(x->status, "ok") && x->ms > 0; }

/* The share of the device's peak that binds (the larger of FMA and read), its letter, and
 * whether it is above the peak. */
static double binding_share(const cell *x, char *which)
{
    const double f = x->peak_fma > 0 ? 100 * x->gflops / x->peak_fma : NAN;
    const double b = x->peak_read > 0 ? 100 * x->gbs / x->peak_read : NAN;
    *which = !(f >= b) && !isnan(b) ? 'B' : 'F';
    return *which == 'B' ? b : f;
}

static void fmt_share(const cell *x, char *buf, size_t size)
{
    char which;
    const double p = cell_ok(x) ? binding_share(x, &which) : NAN;
    if (isnan(p)) snprintf(buf, size, "-");
    else if (report_above_peak(p)) snprintf(buf, size, "%s %c", REPORT_ABOVE_PEAK, which);
    else snprintf(buf, size, "%.1f%% %c", p, which);
}

/* The baseline's time over this one: above 1, faster than the baseline. */
static double speedup(const merge *m, const merged_row *w, int c)
{
    const cell *b = &w->cells[m->baseline], *x = &w->cells[c];
    return cell_ok(b) && cell_ok(x) ? b->ms / x->ms : NAN;
}

static void fmt_ratio(double x, char *buf, size_t size)
{
    if (isnan(x)) snprintf(buf, size, "-");
    else if (x >= 100) snprintf(buf, size, "%.0fx", x);
    else if (x >= 10) snprintf(buf, size, "%.1fx", x);
    else if (x >= 0.1) snprintf(buf, size, "%.2fx", x);
    else snprintf(buf, size, "%.2gx", x);
}

static int cmp_dtype(const char *a) { return !strcmp(a, "f32") ? 0 : !strcmp(a, "f16") ? 1 : 2; }

static int cmp_rows(const void *pa, const void *pb)
{
    const merged_row *a = pa, *b = pb;
    if (a->id != b->id) return a->id < b->id ? -1 : 1;
    if (cmp_dtype(a->dtype) != cmp_dtype(b->dtype)) return cmp_dtype(a->dtype) - cmp_dtype(b->dtype);
    if (algo_index(a->algo) != algo_index(b->algo)) return algo_index(a->algo) - algo_index(b->algo);
    return strcmp(a->shape, b->shape);
}

/* ---- markdown ---- */

/* Markdown cells hold no '|' and no line break. */
static void md_text(text_buf *t, const char *s)
{
    for (; *s; s++) {
        if (*s == '|') text_printf(t, "\\|");
        else if (*s == '\n' || *s == '\r') text_printf(t, " ");
        else text_printf(t, "%c", *s);
    }
}

static void md_sources(text_buf *t, const merge *m)
{
    text_printf(t, "## Sources\n\n| file | commit | date | clattn | command |\n|---|---|---|---|---|\n");
    for (int f = 0; f < m->nfiles; f++) {
        const src_file *s = &m->files[f];
        text_printf(t, "| ");
        md_text(t, s->path);
        text_printf(t, " | %s | %s | %s | `", s->commit, s->date, s->version);
        md_text(t, s->command);
        text_printf(t, "` |\n");
    }
    text_printf(t, "\n| device | driver | measured peaks (FMA, read) |\n|---|---|---|\n");
    for (int c = 0; c < m->ncols; c++) {
        const column *col = &m->cols[c];
        text_printf(t, "| ");
        md_text(t, col->name);
        text_printf(t, "%s | %s | %s |\n", c == m->baseline ? " (baseline)" : "", col->drivers[0] ? col->drivers : "-",
                    col->peaks[0] ? col->peaks : "-");
    }
}

/* Whatever makes two columns less comparable than they look. */
static int md_flags(text_buf *t, const merge *m)
{
    int flags = 0;
    text_printf(t, "\n## Flags\n\n");
    char commits[1024] = "", dirty[1024] = "";
    for (int f = 0; f < m->nfiles; f++) {
        add_distinct(commits, sizeof commits, m->files[f].commit);
        if (strstr(m->files[f].commit, "dirty")) add_distinct(dirty, sizeof dirty, m->files[f].path);
    }
    if (strchr(commits, ',')) {
        text_printf(t, "- **commits differ**: %s: the columns may compare different code\n", commits);
        flags++;
    }
    if (dirty[0]) {
        text_printf(t, "- **modified trees** (commit ends in -dirty): %s\n", dirty);
        flags++;
    }
    for (int c = 0; c < m->ncols; c++) {
        const column *col = &m->cols[c];
        if (strchr(col->drivers, ',')) {
            text_printf(t, "- **drivers differ** for %s: %s\n", col->name, col->drivers);
            flags++;
        }
        if (col->superseded) {
            text_printf(t, "- **replaced**: %d cell(s) of %s were in more than one file, and the last file given "
                           "counts: later files replaced cells of %s\n", col->superseded, col->name, col->replaced);
            flags++;
        }
        text_buf missing = {0};
        int nmissing = 0;
        for (int r = 0; r < m->nrows; r++) {
            const merged_row *w = &m->rows[r];
            if (w->cells[c].have) continue;
            if (nmissing++ < 40) text_printf(&missing, "%s%d %s %s", nmissing > 1 ? ", " : "", w->id, w->dtype, w->algo);
        }
        if (nmissing) {
            text_printf(t, "- **cases missing** on %s (%d of %d rows): %s%s\n", col->name, nmissing, m->nrows,
                        missing.s ? missing.s : "", nmissing > 40 ? ", ..." : "");
            flags++;
        }
        free(missing.s);
    }
    int above = 0;
    text_buf where = {0};
    for (int r = 0; r < m->nrows; r++)
        for (int c = 0; c < m->ncols; c++) {
            char which;
            const cell *x = &m->rows[r].cells[c];
            if (!cell_ok(x) || !report_above_peak(binding_share(x, &which))) continue;
            text_printf(&where, "%s%d %s %s on %s", above++ ? "; " : "", m->rows[r].id, m->rows[r].dtype,
                        m->rows[r].algo, m->cols[c].name);
        }
    if (above) {
        text_printf(t, "- **above the measured peak** (%s): %d cell(s) measured more than their device's measured "
                       "peak, a measurement error of the peak (or a cache's help), not a percentage: %s\n",
                    REPORT_ABOVE_PEAK, above, where.s ? where.s : "");
        flags++;
    }
    free(where.s);
    if (!flags) text_printf(t, "none: one commit, every case on every device\n");
    return flags;
}

static void md_table(text_buf *t, const merge *m)
{
    text_printf(t, "\n## Table\n\nPer device: the median ms per call; the share of the device's measured peak "
                   "that binds (F: FMA rate, B: read bandwidth, the larger of the two); the speed-up over ");
    md_text(t, m->cols[m->baseline].name);
    text_printf(t, " (its ms / this ms). A status in place of ms: the row did not run there.\n\n| id | shape | dtype | algo |");
    for (int c = 0; c < m->ncols; c++) {
        text_printf(t, " ");
        md_text(t, m->cols[c].name);
        text_printf(t, " ms | %%peak | x base |");
    }
    text_printf(t, "\n|---|---|---|---|");
    for (int c = 0; c < m->ncols; c++) text_printf(t, "---|---|---|");
    text_printf(t, "\n");
    for (int r = 0; r < m->nrows; r++) {
        const merged_row *w = &m->rows[r];
        text_printf(t, "| %d | %s | %s | %s |", w->id, w->shape, w->dtype, w->algo);
        for (int c = 0; c < m->ncols; c++) {
            const cell *x = &w->cells[c];
            char ms[32], share[32], ratio[32];
            if (!x->have) snprintf(ms, sizeof ms, "-");
            else if (!cell_ok(x)) snprintf(ms, sizeof ms, "%s", x->status);
            else snprintf(ms, sizeof ms, x->ms >= 1000 ? "%.0f" : "%.4g", x->ms);
            fmt_share(x, share, sizeof share);
            fmt_ratio(speedup(m, w, c), ratio, sizeof ratio);
            text_printf(t, " %s | %s | %s |", ms, share, ratio);
        }
        text_printf(t, "\n");
    }
}

/* ---- SVG ---- */

static void svg_escape(text_buf *t, const char *s)
{
    for (; *s; s++) {
        if (*s == '&') text_printf(t, "&amp;");
        else if (*s == '<') text_printf(t, "&lt;");
        else if (*s == '>') text_printf(t, "&gt;");
        else if (*s == '"') text_printf(t, "&quot;");
        else text_printf(t, "%c", *s);
    }
}

/* Whether a row has a bar: a device other than the baseline with a speed-up. */
static bool has_bar(const merge *m, const merged_row *w)
{
    for (int c = 0; c < m->ncols; c++)
        if (c != m->baseline && speedup(m, w, c) > 0) return true;
    return false;
}

/* Grouped bars, one group per row that has a comparison (the others are in the table only),
 * one bar per device but the baseline: the speed-up over the baseline on a log scale, drawn
 * from the 1x line (up: faster). */
static void svg_chart(text_buf *t, const merge *m)
{
    static const char *colour[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
                                   "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
    double lo = 0, hi = 0; /* decades, 1x included */
    for (int r = 0; r < m->nrows; r++)
        for (int c = 0; c < m->ncols; c++) {
            const double x = speedup(m, &m->rows[r], c);
            if (c == m->baseline || !(x > 0)) continue;
            lo = fmin(lo, floor(log10(x)));
            hi = fmax(hi, ceil(log10(x)));
        }
    if (hi == lo) hi = lo + 1;
    int groups = 0;
    for (int r = 0; r < m->nrows; r++) groups += has_bar(m, &m->rows[r]);
    const int bars = m->ncols > 1 ? m->ncols - 1 : 1, bw = 10, gw = bars * bw + 8;
    const int left = 70, top = 60, ph = 360, bars_width = left + gw * (groups ? groups : 1) + 40;
    const int width = bars_width > 720 ? bars_width : 720; /* room for the title */
    const int height = top + ph + 110 + 18 * m->ncols;
#define Y(v) (top + (int)(ph * (hi - (v)) / (hi - lo)))
    text_printf(t, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
                   "height=\"%d\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%%\" height=\"100%%\" "
                   "fill=\"white\"/>\n<text x=\"%d\" y=\"20\" font-size=\"14\">clattn report: speed-up over ",
                width, height, left);
    svg_escape(t, m->cols[m->baseline].name);
    text_printf(t, "</text>\n<text x=\"%d\" y=\"38\">per case and algorithm, log scale, above the line: faster; "
                   "cases no second device ran are in the table only</text>\n", left);
    for (int d = (int)lo; d <= (int)hi; d++) {
        text_printf(t, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\"/>\n", left, Y(d), bars_width - 30, Y(d),
                    d == 0 ? "black" : "#ddd");
        text_printf(t, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%gx</text>\n", left - 5, Y(d) + 4, pow(10, d));
    }
    text_printf(t, "<text transform=\"translate(18,%d) rotate(-90)\" text-anchor=\"middle\">speed-up over the "
                   "baseline</text>\n", top + ph / 2);
    for (int r = 0, g = 0; r < m->nrows; r++) {
        const merged_row *w = &m->rows[r];
        if (!has_bar(m, w)) continue;
        const int x0 = left + 6 + g++ * gw;
        for (int c = 0, s = 0; c < m->ncols; c++) {
            if (c == m->baseline) continue;
            const double x = speedup(m, w, c);
            const int bx = x0 + bw * s++;
            if (!(x > 0)) continue;
            const int y1 = Y(log10(x)), y0 = Y(0);
            char share[32];
            fmt_share(&w->cells[c], share, sizeof share);
            text_printf(t, "<rect class=\"bar\" x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\"><title>case %d "
                           "%s %s %s, ", bx, y1 < y0 ? y1 : y0, bw - 1, abs(y0 - y1) > 0 ? abs(y0 - y1) : 1,
                        colour[c % 10], w->id, w->shape, w->dtype, w->algo);
            svg_escape(t, m->cols[c].name);
            text_printf(t, ": %.4g ms, %s of its peak, %.3gx</title></rect>\n", w->cells[c].ms, share, x);
        }
        text_printf(t, "<text transform=\"translate(%d,%d) rotate(-60)\" text-anchor=\"end\">%d %s %s</text>\n",
                    x0 + gw / 2, top + ph + 12, w->id, w->dtype, w->algo);
    }
    for (int c = 0, s = 0; c < m->ncols; c++) {
        const int y = top + ph + 92 + 18 * s++;
        text_printf(t, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"12\" fill=\"%s\"/>\n<text x=\"%d\" y=\"%d\">",
                    left, y - 10, c == m->baseline ? "black" : colour[c % 10], left + 18, y);
        svg_escape(t, m->cols[c].name);
        text_printf(t, "%s</text>\n", c == m->baseline ? " (baseline: the 1x line)" : "");
    }
    text_printf(t, "</svg>\n");
#undef Y
}

/* ---- the command ---- */

enum { OPT_BASELINE = 256, OPT_MD, OPT_SVG, OPT_ALGO };

static const struct option report_options[] = {
    {"baseline", required_argument, NULL, OPT_BASELINE},
    {"md", required_argument, NULL, OPT_MD},
    {"svg", required_argument, NULL, OPT_SVG},
    {"algo", required_argument, NULL, OPT_ALGO},
    {NULL, 0, NULL, 0},
};

static bool contains_nocase(const char *hay, const char *needle)
{
    for (; *hay; hay++) {
        size_t i = 0;
        while (needle[i] && tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i])) i++;
        if (!needle[i]) return true;
    }
    return false;
}

/* --baseline: the one device whose name holds the text (case-insensitive). */
static int pick_baseline(merge *m, const char *want)
{
    m->baseline = 0;
    if (!want) return 0;
    int found = -1;
    for (int c = 0; c < m->ncols; c++) {
        if (!contains_nocase(m->cols[c].name, want)) continue;
        if (found >= 0)
            return cli_error("report: --baseline '%s' matches '%s' and '%s': give more of the name", want,
                             m->cols[found].name, m->cols[c].name);
        found = c;
    }
    if (found < 0) {
        char names[1024] = "";
        for (int c = 0; c < m->ncols; c++) add_distinct(names, sizeof names, m->cols[c].name);
        return cli_error("report: --baseline '%s' matches no device (devices: %s)", want, names);
    }
    m->baseline = found;
    return 0;
}

static int parse_algos(const char *list, bool want[3])
{
    want[0] = want[1] = want[2] = false;
    const char *item;
    size_t len;
    while (cli_list_next(&list, &item, &len)) {
        int a = -1;
        static const char *names[] = {"fused", "unfused", "reference"};
        for (int i = 0; i < 3; i++)
            if (cli_list_item_is(item, len, names[i])) a = i;
        if (cli_list_item_is(item, len, "all")) want[0] = want[1] = want[2] = true;
        else if (a >= 0) want[a] = true;
        else
            return cli_error("report: --algo: unknown algorithm '%.*s' (valid: fused, unfused, reference, all)",
                             (int)len, item);
    }
    return 0;
}

static int write_outputs(const merge *m, const char *md, const char *svg)
{
    text_buf t = {0};
    text_printf(&t, "# clattn report\n\n%d bench result file(s), %d device(s), %d row(s) (case, dtype, algorithm).\n\n",
                m->nfiles, m->ncols, m->nrows);
    md_sources(&t, m);
    md_flags(&t, m);
    md_table(&t, m);
    if (t.failed) return cli_error("report: out of memory");
    int rc = md ? report_write_text(md, t.s) : 0;
    if (!rc) fputs(t.s, stdout);
    free(t.s);
    if (rc || !svg) return rc;
    text_buf s = {0};
    svg_chart(&s, m);
    rc = s.failed ? cli_error("report: out of memory") : report_write_text(svg, s.s);
    free(s.s);
    return rc;
}

/* Files and options may come in any order: the files are taken out first (an option's value
 * stays with it), and the options go through the program's one parser. Returns the options'
 * argc; `files` gets the rest. */
static int split_files(int argc, char **argv, char **opts, const char **files, int *nfiles)
{
    int n = 0;
    opts[n++] = argv[0];
    *nfiles = 0;
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] != '-' || !argv[i][1]) {
            files[(*nfiles)++] = argv[i];
            continue;
        }
        opts[n++] = argv[i];
        bool takes_value = false;
        for (const struct option *o = report_options; o->name; o++)
            takes_value = takes_value || (!strncmp(argv[i], "--", 2) && !strcmp(argv[i] + 2, o->name) &&
                                          o->has_arg == required_argument);
        if (takes_value && i + 1 < argc) opts[n++] = argv[++i];
    }
    opts[n] = NULL;
    return n;
}

int cmd_report(int argc, char **argv)
{
    const char *baseline = NULL, *md = NULL, *svg = NULL;
    merge m;
    memset(&m, 0, sizeof m);
    m.want_algo[0] = m.want_algo[1] = true; /* the reference is a CPU stand-in, not a device */
    char **opts = calloc((size_t)argc + 1, sizeof *opts);
    const char **files = calloc((size_t)argc + 1, sizeof *files);
    m.rows = calloc(MAX_ROWS, sizeof *m.rows);
    int rc = opts && files && m.rows ? 0 : cli_error("report: out of memory"), nfiles = 0;
    const int nopts = rc ? 0 : split_files(argc, argv, opts, files, &nfiles);
    optind = 0;
    for (int c; !rc && (c = cli_next_option("report", nopts, opts, "", report_options)) != -1;) {
        switch (c) {
        case OPT_BASELINE: baseline = optarg; break;
        case OPT_MD: md = optarg; break;
        case OPT_SVG: svg = optarg; break;
        case OPT_ALGO: rc = parse_algos(optarg, m.want_algo); break;
        default: rc = 1; /* reported */
        }
    }
    if (!rc && !nfiles) rc = cli_error("report: give one or more bench JSON files (clattn bench --json F)");
    for (int i = 0; i < nfiles && !rc; i++) rc = load_file(&m, files[i]);
    if (!rc && !m.nrows) rc = cli_error("report: no row to report (see --algo)");
    if (!rc) rc = pick_baseline(&m, baseline);
    if (!rc) {
        qsort(m.rows, (size_t)m.nrows, sizeof *m.rows, cmp_rows);
        rc = write_outputs(&m, md, svg);
    }
    free(m.rows);
    free(opts);
    free(files);
    return rc;
}
