/**
 * The helper's end of the callback protocol: messages out on its stdout, int replies in on its
 * stdin, both raw fds (the toolstack is the only reader and writer of them). A reply is awaited
 * with an asynchronous read so the process stays responsive while the toolstack works.
 */
import {readExact, writeAllSync} from '../fd/index.js'
import {HELPER_REPLY_SIZE, XTL, decodeHelperReply, encodeHelperMessage, type HelperMessage} from './protocol.js'

/** What libxl-save-helper does when the toolstack closes its stdin: exit(-2). */
export const EXIT_REPLY_EOF = 254

export class HelperSide {
  constructor(
    private readonly inFd = 0,
    private readonly outFd = 1,
    /** Names the logs (`xl-ts-save-helper`). */
    private readonly context = 'xl-ts-save-helper',
  ) {}

  send(msg: HelperMessage): void {
    writeAllSync(this.outFd, [encodeHelperMessage(msg)], {what: 'the callback channel to the toolstack'})
  }

  /** Sends a message that needs an answer and waits for the int. */
  async call(msg: HelperMessage): Promise<number> {
    this.send(msg)
    let reply: Buffer
    try {
      reply = await readExact(this.inFd, HELPER_REPLY_SIZE, {what: `the reply to ${msg.type}`, eof: 'error'})
    } catch {
      // The toolstack went away: nothing to report to, leave as Xen's helper does.
      process.exit(EXIT_REPLY_EOF)
    }
    return decodeHelperReply(reply)
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
