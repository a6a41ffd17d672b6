/** What tests install through ../test-hooks.ts (the fault points and the checkpoint probe). */
export {checkpointHeldAt} from './probe.js'
