/* Decoding one rectangle of a JPEG image with libjpeg-turbo's partial decompression.
 *
 * A person crop needs a small part of its image, and a worker's time is mostly the image's
 * entropy decoding (experiments/benchmarks, section 1). libjpeg-turbo can skip the rows above
 * the region (jpeg_skip_scanlines: entropy decoding only, no IDCT, upsampling or colour
 * conversion), decode only the iMCU columns that hold the region (jpeg_crop_scanline) and stop
 * after the region's last row, which OpenCV and simplejpeg do not expose.
 *
 * Strict as simplejpeg's decoder: libjpeg's warnings (corrupt data, premature end of data) are
 * errors, and a file whose EOI marker is missing is refused even when decoding stops before the
 * end of the file. Errors raise ValueError; libjpeg never exits the process.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
} ErrorManager;

static void raise_error(j_common_ptr cinfo) {
    ErrorManager *err = (ErrorManager *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

/* msg_level -1 is a warning: data libjpeg would decode anyway, as grey or as garbage. Trace
 * messages (levels >= 0) are dropped. */
static void emit_message(j_common_ptr cinfo, int msg_level) {
    if (msg_level < 0) {
        raise_error(cinfo);
    }
}

typedef struct {
    struct jpeg_decompress_struct cinfo;
    ErrorManager err;
    const unsigned char *data;
    size_t size;
    int scale_denom;
    /* The region in output (scaled) pixels: requested, clipped to the image, then widened to
     * the iMCU boundary on the left by jpeg_crop_scanline. */
    JDIMENSION x0, y0, x1, y1;
    unsigned char *pixels;
} Decoder;

/* Each phase runs without the GIL and returns -1 with err.message set on failure. setjmp is
 * called in the phase itself, so a longjmp never leaves a Py_BEGIN_ALLOW_THREADS block. */

static int read_header(Decoder *d) {
    if (setjmp(d->err.jump)) {
        return -1;
    }
    jpeg_create_decompress(&d->cinfo);
    jpeg_mem_src(&d->cinfo, d->data, (unsigned long)d->size);
    jpeg_read_header(&d->cinfo, TRUE);
    if (d->cinfo.jpeg_color_space == JCS_CMYK || d->cinfo.jpeg_color_space == JCS_YCCK) {
        snprintf(d->err.message, JMSG_LENGTH_MAX, "cannot decode a CMYK or YCCK JPEG to RGB");
        return -1;
    }
    d->cinfo.out_color_space = JCS_RGB;
    d->cinfo.scale_num = 1;
    d->cinfo.scale_denom = (unsigned int)d->scale_denom;
    jpeg_calc_output_dimensions(&d->cinfo);
    return 0;
}

/* Whether an EOI marker (FF D9) follows the header. Entropy-coded data never holds FF D9 (an FF
 * there is followed by 00 or a restart marker), so a file cut short has none. */
static int has_end_marker(const Decoder *d) {
    const unsigned char *start = d->cinfo.src->next_input_byte;
    const unsigned char *p = d->data + d->size - 1;
    for (; p > start; p--) {
        if (p[0] == 0xD9 && p[-1] == 0xFF) {
            return 1;
        }
    }
    return 0;
}

static int start_region(Decoder *d) {
    if (setjmp(d->err.jump)) {
        return -1;
    }
    /* Decoding stops after the region: a file cut short below it would go unnoticed. */
    if (d->y1 < d->cinfo.output_height && !has_end_marker(d)) {
        snprintf(d->err.message, JMSG_LENGTH_MAX, "Premature end of JPEG file");
        return -1;
    }
    jpeg_start_decompress(&d->cinfo);
    if (d->x0 > 0 || d->x1 < d->cinfo.output_width) {
        JDIMENSION width = d->x1 - d->x0;
        jpeg_crop_scanline(&d->cinfo, &d->x0, &width);
        d->x1 = d->x0 + width;
    }
    return 0;
}

static int read_region(Decoder *d) {
    JDIMENSION height = d->y1 - d->y0;
    size_t stride = (size_t)(d->x1 - d->x0) * 3;
    JSAMPARRAY rows = malloc(height * sizeof(JSAMPROW));
    if (rows == NULL) {
        snprintf(d->err.message, JMSG_LENGTH_MAX, "out of memory");
        return -1;
    }
    for (JDIMENSION i = 0; i < height; i++) {
        rows[i] = d->pixels + i * stride;
    }
    if (setjmp(d->err.jump)) {
        free(rows);
        return -1;
    }
    if (d->y0 > 0) {
        jpeg_skip_scanlines(&d->cinfo, d->y0);
    }
    while (d->cinfo.output_scanline < d->y1) {
        JDIMENSION done = d->cinfo.output_scanline - d->y0;
        jpeg_read_scanlines(&d->cinfo, rows + done, height - done);
    }
    /* A region that reaches the bottom gets libjpeg's own check of the rest of the file. */
    if (d->y1 == d->cinfo.output_height) {
        jpeg_finish_decompress(&d->cinfo);
    }
    free(rows);
    return 0;
}

static JDIMENSION clip(Py_ssize_t value, JDIMENSION limit) {
    if (value < 0) {
        return 0;
    }
    return (size_t)value < limit ? (JDIMENSION)value : limit;
}

static PyObject *decode_region(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer buffer;
    Py_ssize_t x0, y0, x1, y1;
    int scale_denom, status;
    if (!PyArg_ParseTuple(args, "y*nnnni", &buffer, &x0, &y0, &x1, &y1, &scale_denom)) {
        return NULL;
    }
    if (scale_denom != 1 && scale_denom != 2 && scale_denom != 4 && scale_denom != 8) {
        PyBuffer_Release(&buffer);
        PyErr_SetString(PyExc_ValueError, "scale_denom must be 1, 2, 4 or 8");
        return NULL;
    }
    Decoder d;
    memset(&d, 0, sizeof(d));
    d.data = buffer.buf;
    d.size = (size_t)buffer.len;
    d.scale_denom = scale_denom;
    d.cinfo.err = jpeg_std_error(&d.err.pub);
    d.err.pub.error_exit = raise_error;
    d.err.pub.emit_message = emit_message;
    PyObject *pixels = NULL;

    Py_BEGIN_ALLOW_THREADS
    status = read_header(&d);
    Py_END_ALLOW_THREADS
    if (status < 0) {
        goto fail;
    }
    d.x0 = clip(x0, d.cinfo.output_width);
    d.x1 = clip(x1, d.cinfo.output_width);
    d.y0 = clip(y0, d.cinfo.output_height);
    d.y1 = clip(y1, d.cinfo.output_height);
    if (d.x1 <= d.x0 || d.y1 <= d.y0) {  /* the region lies outside the image */
        jpeg_destroy_decompress(&d.cinfo);
        PyBuffer_Release(&buffer);
        return Py_BuildValue("(NIIII)", PyByteArray_FromStringAndSize(NULL, 0), 0u, 0u, d.x0, d.y0);
    }

    Py_BEGIN_ALLOW_THREADS
    status = start_region(&d);
    Py_END_ALLOW_THREADS
    if (status < 0) {
        goto fail;
    }
    pixels = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(d.x1 - d.x0) * (d.y1 - d.y0) * 3);
    if (pixels == NULL) {
        jpeg_destroy_decompress(&d.cinfo);
        PyBuffer_Release(&buffer);
        return NULL;
    }
    /* Nobody else holds the new bytearray, so it is filled without the GIL. */
    d.pixels = (unsigned char *)PyByteArray_AS_STRING(pixels);
    Py_BEGIN_ALLOW_THREADS
    status = read_region(&d);
    Py_END_ALLOW_THREADS
    if (status < 0) {
        goto fail;
    }
    jpeg_destroy_decompress(&d.cinfo);  /* also ends a decode stopped above the bottom */
    PyBuffer_Release(&buffer);
    return Py_BuildValue("(NIIII)", pixels, d.x1 - d.x0, d.y1 - d.y0, d.x0, d.y0);

fail:
    jpeg_destroy_decompress(&d.cinfo);
    PyBuffer_Release(&buffer);
    Py_XDECREF(pixels);
    PyErr_SetString(PyExc_ValueError, d.err.message);
    return NULL;
}

static PyMethodDef methods[] = {
    {"decode_region", decode_region, METH_VARARGS,
     "decode_region(data, x0, y0, x1, y1, scale_denom) -> (pixels, width, height, x, y)\n\n"
     "RGB pixels of the region [x0, x1) x [y0, y1) of the JPEG ``data`` (bytes-like) decoded at\n"
     "scale 1 / scale_denom (1, 2, 4 or 8), the region given in scaled pixels and clipped to the\n"
     "image. ``pixels`` is a bytearray of height x width x 3 bytes, row by row; (x, y) is the\n"
     "region's top-left in scaled pixels, x moved left to an iMCU boundary, so the region can be\n"
     "wider than asked. A region outside the image gives width = height = 0. Raises ValueError\n"
     "for corrupt or truncated data and for CMYK or YCCK images."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_jpeg_region",
    .m_doc = "Partial JPEG decoding with libjpeg-turbo (jpeg_skip_scanlines, jpeg_crop_scanline).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__jpeg_region(void) { return PyModule_Create(&module); }
