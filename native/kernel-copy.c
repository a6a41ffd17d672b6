/*
 * xl-ts kernel copy: moves bytes between two fds inside the kernel, so a page of guest memory is
 * not copied into a JavaScript buffer and out again on its way to or from the stream.
 *
 *   move(inFd, inOffset, outFd, outOffset, length, share) -> bytes moved
 *     An offset of -1 uses (and advances) the fd's own position: pipes, sockets, a stream file.
 *     Moves exactly `length` bytes; fewer only when the input ends. Never reads past `length`, so
 *     the bytes after it stay in the fd for whoever reads next.
 *     Which call moves them, by the fds' kinds:
 *       both regular files            copy_file_range (a copy, done when it returns)
 *       either a pipe, share          splice (a file's pages may go into the pipe by reference)
 *       file to socket, share         sendfile (the same, into the socket's queue)
 *       otherwise                     read/pread + write/pwrite through a buffer of our own
 *     `share` = 0 says the source may change once move returns (a guest that runs again): then no
 *     page leaves by reference, as splice and sendfile from a file may do.
 *     Blocking fds block; a non-blocking fd is waited for with poll(2).
 *
 *   moveRuns(fileFd, runs, outFd, share) -> bytes moved
 *     Moves runs of a file, in order, to outFd at its own position (a stream): `runs` is a
 *     Float64Array of (offset, length) pairs. Into a file, or with `share` into a pipe or socket,
 *     each run goes as `move` sends it. Otherwise (a copy into a stream) the runs are read into one
 *     buffer and written out 1 MiB at a time: scattered pages then cost a pread each, not a pread
 *     and a small write each.
 *     Fewer bytes only when the file ends inside a run (the runs after it are not read).
 *
 *   fileRuns(fd, buffer, runs, write) -> bytes
 *     pread (write = 0) or pwrite (write = 1) of runs of a file from or into `buffer`, the runs
 *     back to back in it: the scattered pages of a batch in one call. Fewer bytes only when a read
 *     meets the end of the file.
 *
 *   pipeSize(fd, bytes) -> the pipe's size after asking for `bytes` (F_SETPIPE_SZ), or its
 *     current size when bytes = 0. Throws for an fd that is not a pipe.
 *
 * Errors are thrown as Node's are: an Error with `code` (EPIPE, EBADF, ...), `errno` (negative, as
 * Node's) and `syscall`.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#define BOUNCE_SIZE (1 << 20)
/* The most one splice/sendfile/copy_file_range call is asked to move. */
#define STEP_MAX (1L << 30)

enum kind { KIND_FILE, KIND_PIPE, KIND_SOCKET, KIND_OTHER };

static enum kind kind_of(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return KIND_OTHER;
  if (S_ISREG(st.st_mode)) return KIND_FILE;
  if (S_ISFIFO(st.st_mode)) return KIND_PIPE;
  if (S_ISSOCK(st.st_mode)) return KIND_SOCKET;
  return KIND_OTHER;
}

static const char *errno_name(int e) {
  switch (e) {
    case EPIPE: return "EPIPE";
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case EIO: return "EIO";
    case ENOSPC: return "ENOSPC";
    case EFBIG: return "EFBIG";
    case ECONNRESET: return "ECONNRESET";
    case ENOMEM: return "ENOMEM";
    case EXDEV: return "EXDEV";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case ENOSYS: return "ENOSYS";
    case EAGAIN: return "EAGAIN";
    case EFAULT: return "EFAULT";
    case ESPIPE: return "ESPIPE";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case EBUSY: return "EBUSY";
    case EDQUOT: return "EDQUOT";
    default: return "EUNKNOWN";
  }
}

static void throw_errno(napi_env env, int e, const char *syscall) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s, %s", errno_name(e), strerror(e));
  napi_value code, text, err, num, sys;
  napi_create_string_utf8(env, errno_name(e), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &text);
  napi_create_error(env, code, text, &err);
  napi_create_int32(env, -e, &num);
  napi_set_named_property(env, err, "errno", num);
  napi_set_named_property(env, err, "code", code);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sys);
  napi_set_named_property(env, err, "syscall", sys);
  napi_throw(env, err);
}

/* Waits until fd is ready for `events`; 0, or an errno. */
static int wait_for(int fd, short events) {
  struct pollfd p = {.fd = fd, .events = events};
  for (;;) {
    int r = poll(&p, 1, -1);
    if (r >= 0) return 0;
    if (errno != EINTR) return errno;
  }
}

/* After a failed read or write on fd: 1 to try again (EINTR, or EAGAIN and fd became ready for
 * `events`), 0 to give up with errno set. */
static int again(int fd, short events) {
  if (errno == EINTR) return 1;
  if (errno != EAGAIN) return 0;
  int e = wait_for(fd, events);
  if (!e) return 1;
  errno = e;
  return 0;
}

struct move {
  int in, out;
  int64_t in_off, out_off; /* -1: the fd's position */
  int64_t length;
  int64_t done;
  const char *failed; /* the syscall that failed */
  int error;
};

/* One step of splice/sendfile/copy_file_range: moved bytes, 0 at end of input, -1 with errno. */
typedef ssize_t (*step_fn)(struct move *m, size_t n);

static ssize_t step_copy_file_range(struct move *m, size_t n) {
  loff_t in = m->in_off, out = m->out_off;
  ssize_t r = copy_file_range(m->in, m->in_off < 0 ? NULL : &in, m->out, m->out_off < 0 ? NULL : &out, n, 0);
  return r;
}

static ssize_t step_splice(struct move *m, size_t n) {
  loff_t in = m->in_off, out = m->out_off;
  return splice(m->in, m->in_off < 0 ? NULL : &in, m->out, m->out_off < 0 ? NULL : &out, n, SPLICE_F_MOVE);
}

static ssize_t step_sendfile(struct move *m, size_t n) {
  off_t in = m->in_off;
  return sendfile(m->out, m->in, m->in_off < 0 ? NULL : &in, n);
}

/*
 * Runs `step` until the length is moved or the input ends. EAGAIN (a non-blocking fd) waits for
 * both fds with poll. Returns 0, or -1 with m->error
 * set; -2 when the call is not supported for these fds before anything moved (the caller falls back).
 */
static int run_steps(struct move *m, step_fn step, const char *name) {
  while (m->done < m->length) {
    int64_t left = m->length - m->done;
    ssize_t r = step(m, (size_t)(left < STEP_MAX ? left : STEP_MAX));
    if (r > 0) {
      m->done += r;
      if (m->in_off >= 0) m->in_off += r;
      if (m->out_off >= 0) m->out_off += r;
      continue;
    }
    if (r == 0) return 0; /* end of input */
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      int e = wait_for(m->in, POLLIN);
      if (!e) e = wait_for(m->out, POLLOUT);
      if (e) {
        m->error = e;
        m->failed = "poll";
        return -1;
      }
      continue;
    }
    if (m->done == 0 && (errno == EXDEV || errno == EINVAL || errno == EOPNOTSUPP || errno == ENOSYS)) return -2;
    m->error = errno;
    m->failed = name;
    return -1;
  }
  return 0;
}

/* The copy through a buffer of ours: any two fds. */
static int run_bounce(struct move *m) {
  char *buf = malloc(BOUNCE_SIZE);
  if (!buf) {
    m->error = ENOMEM;
    m->failed = "malloc";
    return -1;
  }
  int rc = 0;
  while (m->done < m->length) {
    int64_t left = m->length - m->done;
    size_t want = left < BOUNCE_SIZE ? (size_t)left : BOUNCE_SIZE;
    ssize_t got = m->in_off < 0 ? read(m->in, buf, want) : pread(m->in, buf, want, m->in_off);
    if (got < 0) {
      if (again(m->in, POLLIN)) continue;
      m->error = errno;
      m->failed = m->in_off < 0 ? "read" : "pread";
      rc = -1;
      break;
    }
    if (got == 0) break;
    if (m->in_off >= 0) m->in_off += got;
    ssize_t put = 0;
    while (put < got) {
      ssize_t w = m->out_off < 0 ? write(m->out, buf + put, got - put) : pwrite(m->out, buf + put, got - put, m->out_off);
      if (w < 0) {
        if (again(m->out, POLLOUT)) continue;
        m->error = errno;
        m->failed = m->out_off < 0 ? "write" : "pwrite";
        rc = -1;
        break;
      }
      put += w;
      if (m->out_off >= 0) m->out_off += w;
    }
    m->done += put;
    if (rc) break;
  }
  free(buf);
  return rc;
}

static int do_move(struct move *m, int share) {
  enum kind ki = kind_of(m->in), ko = kind_of(m->out);
  int rc = -2;
  if (ki == KIND_FILE && ko == KIND_FILE) rc = run_steps(m, step_copy_file_range, "copy_file_range");
  /* Into a pipe from a file only when sharing is allowed; out of a pipe always (the target copies). */
  else if (ki == KIND_PIPE || (ko == KIND_PIPE && (share || ki != KIND_FILE))) rc = run_steps(m, step_splice, "splice");
  else if (ki == KIND_FILE && ko == KIND_SOCKET && share) rc = run_steps(m, step_sendfile, "sendfile");
  if (rc == -2) rc = run_bounce(m);
  return rc;
}

static int get_i64(napi_env env, napi_value v, int64_t *out, const char *what) {
  if (napi_get_value_int64(env, v, out) != napi_ok) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a number", what);
    napi_throw_type_error(env, NULL, msg);
    return -1;
  }
  return 0;
}

/* Fetches the first n arguments; false (after throwing `usage`) when fewer came. */
static bool get_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv, const char *usage) {
  size_t argc = n;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc >= n) return true;
  napi_throw_type_error(env, NULL, usage);
  return false;
}

/* An fd argument (0 .. INT32_MAX); -1 after throwing. */
static int get_fd(napi_env env, napi_value v, const char *what) {
  int64_t fd;
  if (get_i64(env, v, &fd, what)) return -1;
  if (fd >= 0 && fd <= INT32_MAX) return (int)fd;
  char msg[96];
  snprintf(msg, sizeof msg, "%s is not a file descriptor", what);
  napi_throw_range_error(env, NULL, msg);
  return -1;
}

static napi_value int64_result(napi_env env, int64_t v) {
  napi_value result;
  napi_create_int64(env, v, &result);
  return result;
}

static napi_value js_move(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  if (!get_args(env, info, 6, argv, "move(inFd, inOffset, outFd, outOffset, length, share)")) return NULL;
  int64_t in, in_off, out, out_off, length;
  bool share = false;
  if (get_i64(env, argv[0], &in, "inFd") || get_i64(env, argv[1], &in_off, "inOffset") || get_i64(env, argv[2], &out, "outFd") ||
      get_i64(env, argv[3], &out_off, "outOffset") || get_i64(env, argv[4], &length, "length"))
    return NULL;
  napi_get_value_bool(env, argv[5], &share);
  if (in < 0 || out < 0 || in > INT32_MAX || out > INT32_MAX || in_off < -1 || out_off < -1 || length < 0) {
    napi_throw_range_error(env, NULL, "move: bad fd, offset or length");
    return NULL;
  }
  struct move m = {.in = (int)in, .out = (int)out, .in_off = in_off, .out_off = out_off, .length = length};
  if (do_move(&m, share) != 0) {
    throw_errno(env, m.error, m.failed);
    return NULL;
  }
  return int64_result(env, m.done);
}

/* Writes all of buf[0..len) to fd at its position; 0, or -1 with errno. */
static int write_all(int fd, const char *buf, size_t len) {
  size_t put = 0;
  while (put < len) {
    ssize_t w = write(fd, buf + put, len - put);
    if (w < 0) {
      if (again(fd, POLLOUT)) continue;
      return -1;
    }
    put += (size_t)w;
  }
  return 0;
}

/* Reads a Float64Array of (offset, length) pairs; NULL after throwing. */
static const double *get_runs(napi_env env, napi_value v, size_t *pairs) {
  napi_typedarray_type type;
  size_t count = 0;
  void *data = NULL;
  bool is_typed = false;
  napi_is_typedarray(env, v, &is_typed);
  if (is_typed) napi_get_typedarray_info(env, v, &type, &count, &data, NULL, NULL);
  if (!is_typed || type != napi_float64_array || count % 2) {
    napi_throw_type_error(env, NULL, "runs must be a Float64Array of (offset, length) pairs");
    return NULL;
  }
  const double *runs = data;
  for (size_t i = 0; i < count; i++) {
    double x = runs[i];
    if (!(x >= 0 && x <= 9007199254740991.0) || x != (double)(int64_t)x) {
      napi_throw_range_error(env, NULL, "runs: an offset or length is not a whole number of bytes");
      return NULL;
    }
  }
  *pairs = count / 2;
  return count ? runs : (const double *)"";
}

static napi_value js_move_runs(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv, "moveRuns(fileFd, runs, outFd, share)")) return NULL;
  size_t pairs;
  bool share = false;
  int in = get_fd(env, argv[0], "fileFd");
  if (in < 0) return NULL;
  const double *runs = get_runs(env, argv[1], &pairs);
  if (!runs) return NULL;
  int out = get_fd(env, argv[2], "outFd");
  if (out < 0) return NULL;
  napi_get_value_bool(env, argv[3], &share);
  int64_t total = 0;
  enum kind ko = kind_of(out);
  /* Into a file, each run is one copy_file_range; into a pipe or socket by reference, a splice or
   * sendfile. Only a copy into a stream gathers the runs in a buffer of ours. */
  if (ko == KIND_FILE || (share && (ko == KIND_PIPE || ko == KIND_SOCKET))) {
    for (size_t i = 0; i < pairs; i++) {
      struct move m = {.in = in, .out = out, .in_off = (int64_t)runs[2 * i], .out_off = -1, .length = (int64_t)runs[2 * i + 1]};
      if (do_move(&m, share) != 0) {
        throw_errno(env, m.error, m.failed);
        return NULL;
      }
      total += m.done;
      if (m.done < m.length) break;
    }
  } else {
    char *buf = malloc(BOUNCE_SIZE);
    if (!buf) {
      throw_errno(env, ENOMEM, "malloc");
      return NULL;
    }
    size_t fill = 0;
    int ended = 0;
    for (size_t i = 0; i < pairs && !ended; i++) {
      int64_t off = (int64_t)runs[2 * i], left = (int64_t)runs[2 * i + 1];
      while (left > 0) {
        if (fill == BOUNCE_SIZE) {
          if (write_all(out, buf, fill)) goto write_failed;
          total += fill;
          fill = 0;
        }
        size_t want = BOUNCE_SIZE - fill;
        if ((int64_t)want > left) want = (size_t)left;
        ssize_t got = pread(in, buf + fill, want, off);
        if (got < 0) {
          if (errno == EINTR) continue;
          int e = errno;
          free(buf);
          throw_errno(env, e, "pread");
          return NULL;
        }
        if (got == 0) {
          ended = 1;
          break;
        }
        fill += (size_t)got;
        off += got;
        left -= got;
      }
    }
    if (fill && write_all(out, buf, fill)) goto write_failed;
    total += fill;
    free(buf);
    goto done;
  write_failed: {
    int e = errno;
    free(buf);
    throw_errno(env, e, "write");
    return NULL;
  }
  }
done:
  return int64_result(env, total);
}

static napi_value js_file_runs(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv, "fileRuns(fd, buffer, runs, write)")) return NULL;
  size_t pairs, size = 0;
  void *data = NULL;
  bool write_ = false, is_buffer = false;
  int fd = get_fd(env, argv[0], "fd");
  if (fd < 0) return NULL;
  napi_is_buffer(env, argv[1], &is_buffer);
  if (!is_buffer) {
    napi_throw_type_error(env, NULL, "fileRuns: buffer must be a Buffer");
    return NULL;
  }
  napi_get_buffer_info(env, argv[1], &data, &size);
  const double *runs = get_runs(env, argv[2], &pairs);
  if (!runs) return NULL;
  napi_get_value_bool(env, argv[3], &write_);
  double need = 0;
  for (size_t i = 0; i < pairs; i++) need += runs[2 * i + 1];
  if (need > (double)size) {
    napi_throw_range_error(env, NULL, "fileRuns: the runs are longer than the buffer");
    return NULL;
  }
  char *at = data;
  int64_t total = 0;
  for (size_t i = 0; i < pairs; i++) {
    int64_t off = (int64_t)runs[2 * i], left = (int64_t)runs[2 * i + 1];
    while (left > 0) {
      ssize_t k = write_ ? pwrite(fd, at, (size_t)left, off) : pread(fd, at, (size_t)left, off);
      if (k < 0) {
        if (errno == EINTR) continue;
        throw_errno(env, errno, write_ ? "pwrite" : "pread");
        return NULL;
      }
      if (k == 0) goto done;
      at += k;
      off += k;
      left -= k;
      total += k;
    }
  }
done:
  return int64_result(env, total);
}

static napi_value js_pipe_size(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int64_t fd = -1, bytes = 0;
  if (argc < 2 || get_i64(env, argv[0], &fd, "fd") || get_i64(env, argv[1], &bytes, "bytes")) return NULL;
  if (fd < 0 || fd > INT32_MAX || bytes < 0 || bytes > INT32_MAX) {
    napi_throw_range_error(env, NULL, "pipeSize: bad fd or size");
    return NULL;
  }
  int r = bytes ? fcntl((int)fd, F_SETPIPE_SZ, (int)bytes) : fcntl((int)fd, F_GETPIPE_SZ);
  if (r < 0) {
    throw_errno(env, errno, "fcntl");
    return NULL;
  }
  napi_value result;
  napi_create_int32(env, r, &result);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "move", NAPI_AUTO_LENGTH, js_move, NULL, &fn);
  napi_set_named_property(env, exports, "move", fn);
  napi_create_function(env, "moveRuns", NAPI_AUTO_LENGTH, js_move_runs, NULL, &fn);
  napi_set_named_property(env, exports, "moveRuns", fn);
  napi_create_function(env, "fileRuns", NAPI_AUTO_LENGTH, js_file_runs, NULL, &fn);
  napi_set_named_property(env, exports, "fileRuns", fn);
  napi_create_function(env, "pipeSize", NAPI_AUTO_LENGTH, js_pipe_size, NULL, &fn);
  napi_set_named_property(env, exports, "pipeSize", fn);
  return exports;
}

NAPI_MODULE(xlts_kernel_copy, init)
