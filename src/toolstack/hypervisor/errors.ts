/** Errors of the hypervisor port, whichever back end raised them. */
export type HypervisorErrorCode =
  | 'no-such-domain' // no domain with that id or name
  | 'name-in-use' // another domain already has that name
  | 'bad-state' // the domain is not in a state that allows the operation (e.g. set context while running)
  | 'not-supported' // the back end cannot do this (yet)
  | 'backend-failure' // the back end failed: a process died, a socket closed, a file vanished
  | 'bad-request' // arguments out of range (pfn beyond the domain, bitmap of the wrong size)

/** What a command needs besides the code to print xl's own message. */
export interface HypervisorErrorDetails {
  /** The libxl error code xl would report (ERROR_INVAL = -6, ERROR_DOMAIN_NOTFOUND = -21, ...). */
  rc?: number
  /** The domain qualifier as the user gave it (xl: `<q> is an invalid domain identifier (rc=-6)`). */
  qualifier?: string
  /** The domain name involved (the taken name for name-in-use). */
  name?: string
}

/** libxl's error codes that the port's errors carry (libxl_types.idl, `libxl_error`). */
export const LIBXL_ERROR = {
  FAIL: -3,
  INVAL: -6,
  DOMAIN_NOTFOUND: -21,
} as const

export class HypervisorError extends Error {
  override readonly name = 'HypervisorError'
  readonly rc?: number
  readonly qualifier?: string
  readonly domainName?: string
  constructor(
    readonly code: HypervisorErrorCode,
    message: string,
    readonly domid?: number,
    details: HypervisorErrorDetails = {},
  ) {
    super(message)
    if (details.rc !== undefined) this.rc = details.rc
    if (details.qualifier !== undefined) this.qualifier = details.qualifier
    if (details.name !== undefined) this.domainName = details.name
  }
}
