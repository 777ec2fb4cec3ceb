/* The .npy reader and writer of the clattn program: round trips and strict refusals. */
#include "harness.h"
#include "npy.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

TestSuite(npy, .fini = leak_check);

static size_t image(unsigned char *buf, const char *header, const void *data, size_t n)
{
    size_t hl = strlen(header);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (unsigned char)(hl & 0xff);
    buf[9] = (unsigned char)(hl >> 8);
    memcpy(buf + 10, header, hl);
    memcpy(buf + 10 + hl, data, n);
    return 10 + hl + n;
}

Test(npy, round_trip)
{
    char path[] = "/tmp/clattn-npy-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    float data[2 * 3 * 4];
    for (int i = 0; i < 24; i++) data[i] = (float)i * 0.5f - 3;
    int64_t shape[3] = {2, 3, 4};
    char err[256];
    cr_assert_eq(npy_write(path, NPY_F32, 3, shape, data, err, sizeof err), 0, "%s", err);
    npy_array a;
    cr_assert_eq(npy_read(path, &a, err, sizeof err), 0, "%s", err);
    cr_expect_eq(a.type, NPY_F32);
    cr_expect_eq(a.ndim, 3);
    cr_expect_eq(a.shape[2], 4);
    cr_expect_eq(a.count, 24);
    cr_expect(!memcmp(a.data, data, sizeof data));
    npy_free(&a);
    int64_t one[1] = {5};
    int32_t ints[5] = {1, -2, 3, 0, 7};
    cr_assert_eq(npy_write(path, NPY_I32, 1, one, ints, err, sizeof err), 0);
    cr_assert_eq(npy_read(path, &a, err, sizeof err), 0, "%s", err);
    cr_expect_eq(a.type, NPY_I32);
    cr_expect_eq(((int32_t *)a.data)[1], -2);
    npy_free(&a);
    remove(path);
}

Test(npy, refusals)
{
    unsigned char buf[512];
    float d[4] = {1, 2, 3, 4};
    npy_array a;
    char err[256];
    struct { const char *header; size_t bytes; const char *why; } cases[] = {
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }", 16, "unsupported dtype"},
        {"{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }", 16, "unsupported dtype"},
        {"{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 16, "Fortran"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (8,), }", 16, "truncated data"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 16, "trailing"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4611686018427387904), }", 16, "overflow"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", 16, "malformed shape"},
        {"{'descr': '<f4', 'fortran_order': False }", 16, "shape"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = image(buf, cases[i].header, d, cases[i].bytes);
        cr_expect_eq(npy_parse(buf, len, &a, err, sizeof err), -1, "case %zu accepted", i);
        cr_expect(strstr(err, cases[i].why), "case %zu: '%s' lacks '%s'", i, err, cases[i].why);
    }
    cr_expect_eq(npy_parse((const unsigned char *)"not numpy at all", 16, &a, err, sizeof err), -1);
    cr_expect(strstr(err, "magic"));
    size_t len = image(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", d, 16);
    cr_expect_eq(npy_parse(buf, len - 20, &a, err, sizeof err), -1, "truncated header accepted");
    cr_expect_eq(npy_read("/nonexistent/dir/x.npy", &a, err, sizeof err), -1);
    cr_expect(strstr(err, "/nonexistent/dir/x.npy"));
}

/* A write that fails at the last step (the target is a directory, so the rename fails)
 * reports it and leaves nothing behind: no temporary file in the directory, the target as it
 * was. A writer that forgot its temporary file fails here. */
Test(npy, write_failure_leaves_nothing)
{
    float d[2] = {1, 2};
    int64_t shape[1] = {2};
    char err[256], dir[] = "/tmp/clattn-npy-XXXXXX", target[64];
    cr_assert(mkdtemp(dir), "mkdtemp");
    snprintf(target, sizeof target, "%s/out.npy", dir);
    cr_assert_eq(mkdir(target, 0755), 0);
    cr_expect_eq(npy_write(target, NPY_F32, 1, shape, d, err, sizeof err), -1);
    cr_expect(strstr(err, target), "%s", err);
    DIR *dd = opendir(dir);
    int entries = 0;
    for (struct dirent *e; (e = readdir(dd));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            entries++;
            cr_expect_str_eq(e->d_name, "out.npy", "left behind: %s", e->d_name);
        }
    closedir(dd);
    cr_expect_eq(entries, 1);
    struct stat st;
    cr_expect(stat(target, &st) == 0 && S_ISDIR(st.st_mode), "the target changed");
    rmdir(target);
    rmdir(dir);
    /* and a good write lands whole */
    snprintf(target, sizeof target, "/tmp/clattn-npy-ok-%ld.npy", (long)getpid());
    cr_expect_eq(npy_write(target, NPY_F32, 1, shape, d, err, sizeof err), 0, "%s", err);
    npy_array a;
    cr_expect_eq(npy_read(target, &a, err, sizeof err), 0, "%s", err);
    cr_expect(a.count == 2 && ((float *)a.data)[1] == 2.0f);
    npy_free(&a);
    remove(target);
}
