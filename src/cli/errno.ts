/** strerror(3) texts (glibc) for the errors a file operation of ours can meet, as xl prints them. */
const STRERROR: Record<string, string> = {
  EPERM: 'Operation not permitted',
  ENOENT: 'No such file or directory',
  EIO: 'Input/output error',
  EBADF: 'Bad file descriptor',
  EAGAIN: 'Resource temporarily unavailable',
  ENOMEM: 'Cannot allocate memory',
  EACCES: 'Permission denied',
  EBUSY: 'Device or resource busy',
  EEXIST: 'File exists',
  ENOTDIR: 'Not a directory',
  EISDIR: 'Is a directory',
  EINVAL: 'Invalid argument',
  ENFILE: 'Too many open files in system',
  EMFILE: 'Too many open files',
  EFBIG: 'File too large',
  ENOSPC: 'No space left on device',
  EROFS: 'Read-only file system',
  ENAMETOOLONG: 'File name too long',
  ELOOP: 'Too many levels of symbolic links',
  ENXIO: 'No such device or address',
  ENODEV: 'No such device',
  ESRCH: 'No such process',
  ECONNREFUSED: 'Connection refused',
  ECONNRESET: 'Connection reset by peer',
  EPIPE: 'Broken pipe',
  ETIMEDOUT: 'Connection timed out',
}

/** The strerror text of a Node system error (`err.code`), or its message when it has no errno. */
export function strerror(err: unknown): string {
  const code = (err as {code?: unknown} | null)?.code
  if (typeof code === 'string' && STRERROR[code]) return STRERROR[code]
  if (err instanceof Error) return err.message.replace(/^[A-Z][A-Z0-9_]*: /, '').replace(/,\s*\w+ '.*'$/s, '')
  return String(err)
}
