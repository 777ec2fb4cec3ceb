/* `clattn devices`: every platform and device, with what matters to clattn. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

int cmd_devices(int argc, char **argv)
{
    if (argc > 0) return cli_error("devices: unknown option '%s'", argv[0]);
    cl_device_id devs[64];
    cl_uint n = 0;
    clattn_status st = clattn_list_devices(devs, 64, &n);
    if (st) return cli_error("devices: cannot list OpenCL devices: %s (%d)", clattn_status_string(st), st);
    if (n == 0) return cli_error("devices: no OpenCL device found (is an ICD such as pocl-opencl-icd installed?)");
    printf("%-3s %-40s %-5s %-22s %4s %9s %9s\n", "id", "name", "type", "driver", "CUs", "local_KiB", "global_MiB");
    for (cl_uint i = 0; i < n && i < 64; i++) {
        char name[256] = "", driver[128] = "";
        cl_device_type type = 0;
        cl_uint cus = 0;
        cl_ulong local = 0, global = 0;
        clGetDeviceInfo(devs[i], CL_DEVICE_NAME, sizeof name - 1, name, NULL);
        clGetDeviceInfo(devs[i], CL_DRIVER_VERSION, sizeof driver - 1, driver, NULL);
        clGetDeviceInfo(devs[i], CL_DEVICE_TYPE, sizeof type, &type, NULL);
        clGetDeviceInfo(devs[i], CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cus, &cus, NULL);
        clGetDeviceInfo(devs[i], CL_DEVICE_LOCAL_MEM_SIZE, sizeof local, &local, NULL);
        clGetDeviceInfo(devs[i], CL_DEVICE_GLOBAL_MEM_SIZE, sizeof global, &global, NULL);
        const char *t = type & CL_DEVICE_TYPE_GPU ? "GPU" : type & CL_DEVICE_TYPE_CPU ? "CPU" : "other";
        printf("%-3u %-40.40s %-5s %-22.22s %4u %9llu %9llu\n", i, name, t, driver, cus,
               (unsigned long long)(local >> 10), (unsigned long long)(global >> 20));
    }
    return 0;
}
