/**
 * The helper's end of the callback protocol: messages out on its stdout, int replies in on its
 * stdin, both raw fds (the toolstack is the only reader and writer of them). A reply is awaited
 * with an asynchronous read so the process stays responsive while the toolstack works.
 */
import {readExact, writeAllSync} from '../fd/index.js'
import {
  HELPER_MESSAGES,
  HELPER_REPLY_SIZE,
  XTL,
  decodeHelperReply,
  encodeHelperMessage,
  helperMessage,
  type HelperArgValues,
  type HelperCall,
  type HelperCallbackFunctions,
  type HelperMessage,
  type HelperMessageName,
  type HelperNotice,
} from '../helper/index.js'

/** What libxl-save-helper does when the toolstack closes its stdin: exit(-2). */
export const EXIT_REPLY_EOF = 254

export class HelperSide {
  constructor(
    private readonly inFd = 0,
    private readonly outFd = 1,
    /** Names the logs (`xl-ts-save-helper`). */
    private readonly context = 'xl-ts-save-helper',
  ) {}

  /** Sends a message that needs no answer. */
  send(msg: HelperNotice): void {
    this.#write(msg)
  }

  /** Sends a message that needs an answer and waits for the int. */
  async call(msg: HelperCall): Promise<number> {
    this.#write(msg)
    let reply: Buffer
    try {
      reply = await readExact(this.inFd, HELPER_REPLY_SIZE, {what: `the reply to ${msg.type}`, eof: 'error'})
    } catch {
      // The toolstack went away: nothing to report to, leave as Xen's helper does.
      process.exit(EXIT_REPLY_EOF)
    }
    return decodeHelperReply(reply)
  }

  /**
   * The callbacks a helper of this mode installs for what cbflags announce, by name
   * (`waitCheckpoint`): each sends its message with the arguments it is given, in table order, and
   * when the message needs an answer waits for it.
   */
  callbacks(mode: 'save' | 'restore', cbflags: number): HelperCallbackFunctions<Promise<number>, void> {
    const installed: Record<string, (...values: unknown[]) => Promise<number> | void> = {}
    for (const spec of HELPER_MESSAGES) {
      if (!spec.callback || !spec[mode] || ((spec.cbflag ?? 0) & cbflags) === 0) continue
      installed[spec.callbackName] = (...values) => {
        const msg = helperMessage(spec.name, ...(values as HelperArgValues<HelperMessageName>))
        return spec.reply === 'none' ? this.send(msg as HelperNotice) : this.call(msg as HelperCall)
      }
    }
    return installed
  }

  #write(msg: HelperMessage): void {
    writeAllSync(this.outFd, [encodeHelperMessage(msg)], {what: 'the callback channel to the toolstack'})
  }

  log(level: number, message: string, errnoval = 0): void {
    this.send({type: 'log', level, errnoval, context: this.context, formatted: message})
  }

  error(message: string, errnoval = 0): void {
    this.log(XTL.ERROR, message, errnoval)
  }

  progress(doingWhat: string, done: number, total: number): void {
    this.send({type: 'progress', context: 'xc', doingWhat, done, total})
  }
}
