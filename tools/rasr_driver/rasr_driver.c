/* RASR-like call driver; contracts in rasr_driver.h. */
#include "rasr_driver.h"

#include <string.h>
#include <time.h>

static double sf_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Copy one returned row the way RASR's Python::Numpy conversion does. */
static int sf_copy_row(PyObject *row, float *out, Py_ssize_t classes)
{
    Py_buffer view;
    if (PyObject_GetBuffer(row, &view, PyBUF_STRIDES | PyBUF_FORMAT) != 0)
        return -1;
    int ok = view.ndim == 1 && view.shape[0] == classes && view.itemsize == 4 &&
             view.format && strchr(view.format, 'f') != NULL;
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "get_scores returned %zd-D data of item size %zd, expected float32 (%zd,)",
                     (Py_ssize_t)view.ndim, view.itemsize, classes);
        PyBuffer_Release(&view);
        return -1;
    }
    if (view.strides[0] == 4) {
        memcpy(out, view.buf, (size_t)classes * sizeof(float));
    } else {
        const char *base = (const char *)view.buf;
        for (Py_ssize_t c = 0; c < classes; ++c)
            memcpy(out + c, base + c * view.strides[0], sizeof(float));
    }
    PyBuffer_Release(&view);
    return 0;
}

double sf_drive_get_scores(PyObject *get_scores, PyObject *kwargs_list, float *out, Py_ssize_t classes,
                           Py_ssize_t out_step)
{
    Py_ssize_t n = PyList_Size(kwargs_list);
    if (n < 0)
        return -1.0;
    PyObject *empty = PyTuple_New(0);
    if (!empty)
        return -1.0;
    double start = sf_now_ns();
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject *row = PyObject_Call(get_scores, empty, PyList_GET_ITEM(kwargs_list, i));
        if (!row || (out && sf_copy_row(row, out + i * out_step, classes) != 0)) {
            Py_XDECREF(row);
            Py_DECREF(empty);
            return -1.0;
        }
        Py_DECREF(row);
    }
    double elapsed = sf_now_ns() - start;
    Py_DECREF(empty);
    return n ? elapsed / (double)n : 0.0;
}

double sf_drive_calls(PyObject *method, PyObject *kwargs_list)
{
    return sf_drive_get_scores(method, kwargs_list, NULL, 0, 0);
}
