/* Status strings, version and element sizes. */
#include "internal.h"

#define CLATTN_STR2(x) #x
#define CLATTN_STR(x) CLATTN_STR2(x)

const char *clattn_version_string(void)
{
    return CLATTN_STR(CLATTN_VERSION_MAJOR) "." CLATTN_STR(CLATTN_VERSION_MINOR) "." CLATTN_STR(
        CLATTN_VERSION_PATCH);
}

unsigned clattn_version_number(void) { return CLATTN_VERSION_NUMBER; }

static const char *opencl_status_string(clattn_status s)
{
    switch (s) {
    case CL_DEVICE_NOT_FOUND: return "OpenCL: device not found";
    case CL_DEVICE_NOT_AVAILABLE: return "OpenCL: device not available";
    case CL_COMPILER_NOT_AVAILABLE: return "OpenCL: compiler not available";
    case CL_MEM_OBJECT_ALLOCATION_FAILURE: return "OpenCL: memory object allocation failure";
    case CL_OUT_OF_RESOURCES: return "OpenCL: out of resources";
    case CL_OUT_OF_HOST_MEMORY: return "OpenCL: out of host memory";
    case CL_PROFILING_INFO_NOT_AVAILABLE: return "OpenCL: profiling info not available";
    case CL_MEM_COPY_OVERLAP: return "OpenCL: memory copy overlap";
    case CL_BUILD_PROGRAM_FAILURE: return "OpenCL: build program failure";
    case CL_MISALIGNED_SUB_BUFFER_OFFSET: return "OpenCL: misaligned sub-buffer offset";
    case CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST: return "OpenCL: a waited-on event failed";
    case CL_INVALID_VALUE: return "OpenCL: invalid value";
    case CL_INVALID_DEVICE: return "OpenCL: invalid device";
    case CL_INVALID_CONTEXT: return "OpenCL: invalid context";
    case CL_INVALID_COMMAND_QUEUE: return "OpenCL: invalid command queue";
    case CL_INVALID_MEM_OBJECT: return "OpenCL: invalid memory object";
    case CL_INVALID_BINARY: return "OpenCL: invalid binary";
    case CL_INVALID_BUILD_OPTIONS: return "OpenCL: invalid build options";
    case CL_INVALID_PROGRAM: return "OpenCL: invalid program";
    case CL_INVALID_PROGRAM_EXECUTABLE: return "OpenCL: invalid program executable";
    case CL_INVALID_KERNEL_NAME: return "OpenCL: invalid kernel name";
    case CL_INVALID_KERNEL: return "OpenCL: invalid kernel";
    case CL_INVALID_ARG_INDEX: return "OpenCL: invalid argument index";
    case CL_INVALID_ARG_VALUE: return "OpenCL: invalid argument value";
    case CL_INVALID_ARG_SIZE: return "OpenCL: invalid argument size";
    case CL_INVALID_KERNEL_ARGS: return "OpenCL: invalid kernel arguments";
    case CL_INVALID_WORK_DIMENSION: return "OpenCL: invalid work dimension";
    case CL_INVALID_WORK_GROUP_SIZE: return "OpenCL: invalid work-group size";
    case CL_INVALID_WORK_ITEM_SIZE: return "OpenCL: invalid work-item size";
    case CL_INVALID_GLOBAL_OFFSET: return "OpenCL: invalid global offset";
    case CL_INVALID_EVENT_WAIT_LIST: return "OpenCL: invalid event wait list";
    case CL_INVALID_EVENT: return "OpenCL: invalid event";
    case CL_INVALID_OPERATION: return "OpenCL: invalid operation";
    case CL_INVALID_BUFFER_SIZE: return "OpenCL: invalid buffer size";
    case CL_INVALID_GLOBAL_WORK_SIZE: return "OpenCL: invalid global work size";
    case CL_INVALID_PLATFORM: return "OpenCL: invalid platform";
    case CL_INVALID_DEVICE_TYPE: return "OpenCL: invalid device type";
    default: return NULL;
    }
}

const char *clattn_status_string(clattn_status s)
{
    switch (s) {
    case CLATTN_SUCCESS: return "success";
    case CLATTN_INVALID_ARGUMENT: return "invalid argument";
    case CLATTN_INVALID_SHAPE: return "invalid shape";
    case CLATTN_INVALID_STRIDES: return "invalid layout or strides";
    case CLATTN_BUFFER_TOO_SMALL: return "buffer too small for its tensor";
    case CLATTN_UNSUPPORTED: return "not supported by the chosen algorithm on this device";
    case CLATTN_OUT_OF_HOST_MEMORY: return "out of host memory";
    case CLATTN_NO_DEVICE: return "no OpenCL device found";
    case CLATTN_BUILD_FAILED: return "kernel build failed";
    case CLATTN_SIZE_OVERFLOW: return "size overflows a limit";
    case CLATTN_INTERNAL_ERROR: return "internal error";
    case CLATTN_BLAS_ERROR: return "CLBlast error";
    case CLATTN_IO_ERROR: return "file input/output error";
    case CLATTN_BUFFERS_OVERLAP: return "an output overlaps an input or another output";
    case CLATTN_PEER_FAILED: return "another process of the collective call failed";
    case CLATTN_COMM_ERROR: return "communication between processes failed";
    default: break;
    }
    const char *cl = opencl_status_string(s);
    if (cl) return cl;
    return s < 0 && s > -1000 ? "OpenCL: error" : "unknown status";
}

size_t clattn_dtype_size(clattn_dtype dtype)
{
    switch (dtype) {
    case CLATTN_DTYPE_F32: return 4;
    case CLATTN_DTYPE_F16:
    case CLATTN_DTYPE_BF16: return 2;
    default: return 0;
    }
}
