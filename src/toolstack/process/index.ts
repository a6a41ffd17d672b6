/** Processes as the toolstack knows them: by pid and start time. */
export {isAlive, killHard, procStart, selfIdentity, sleep, waitGone} from './identity.js'
