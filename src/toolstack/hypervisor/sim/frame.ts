/**
 * The simulated guest's network output: UDP datagrams in Ethernet II frames (IPv4, valid header
 * checksum and UDP checksum), payload derived from the guest state:
 *
 *   0  "XLTS"   4  u32 version 1   8  u64 step   16  u64 frame sequence   24  u32 PRNG state hash
 *  28  u32 payload length   32..  filler bytes derived from the hash
 *
 * All payload integers big-endian (network order).
 */
import {mix32} from './prng.js'

export const ETH_HEADER = 14
export const IPV4_HEADER = 20
export const UDP_HEADER = 8
export const FRAME_PAYLOAD_MIN = 32
/** The peer every frame goes to (a locally administered MAC, 10.0.0.1, the discard port). */
export const PEER_MAC = Buffer.from([0x02, 0x00, 0x00, 0x00, 0x00, 0x01])
export const PEER_IPV4 = 0x0a000001
export const PEER_PORT = 9

export interface FrameFields {
  mac: Buffer
  ipv4: number
  udpPort: number
  step: number
  seq: number
  stateHash: number
}

function onesComplementSum(buf: Buffer, start: number, end: number, init = 0): number {
  let sum = init
  let i = start
  for (; i + 1 < end; i += 2) sum += buf.readUInt16BE(i)
  if (i < end) sum += buf[i]! << 8
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  return sum
}

function writeU64BE(buf: Buffer, off: number, v: number): void {
  buf.writeUInt32BE(Math.floor(v / 4294967296) >>> 0, off)
  buf.writeUInt32BE(v >>> 0, off + 4)
}

export function buildFrame(f: FrameFields): Buffer {
  const payloadLen = FRAME_PAYLOAD_MIN + (f.stateHash & 63)
  const udpLen = UDP_HEADER + payloadLen
  const ipLen = IPV4_HEADER + udpLen
  const frame = Buffer.alloc(ETH_HEADER + ipLen)
  PEER_MAC.copy(frame, 0)
  f.mac.copy(frame, 6, 0, 6)
  frame.writeUInt16BE(0x0800, 12)
  const ip = ETH_HEADER
  frame[ip] = 0x45
  frame[ip + 1] = 0
  frame.writeUInt16BE(ipLen, ip + 2)
  frame.writeUInt16BE(f.seq & 0xffff, ip + 4)
  frame.writeUInt16BE(0x4000, ip + 6) // DF
  frame[ip + 8] = 64
  frame[ip + 9] = 17
  frame.writeUInt32BE(f.ipv4 >>> 0, ip + 12)
  frame.writeUInt32BE(PEER_IPV4, ip + 16)
  frame.writeUInt16BE(~onesComplementSum(frame, ip, ip + IPV4_HEADER) & 0xffff, ip + 10)
  const udp = ip + IPV4_HEADER
  frame.writeUInt16BE(f.udpPort, udp)
  frame.writeUInt16BE(PEER_PORT, udp + 2)
  frame.writeUInt16BE(udpLen, udp + 4)
  const p = udp + UDP_HEADER
  frame.write('XLTS', p, 'latin1')
  frame.writeUInt32BE(1, p + 4)
  writeU64BE(frame, p + 8, f.step)
  writeU64BE(frame, p + 16, f.seq)
  frame.writeUInt32BE(f.stateHash >>> 0, p + 24)
  frame.writeUInt32BE(payloadLen, p + 28)
  let x = f.stateHash >>> 0
  for (let i = p + FRAME_PAYLOAD_MIN; i < frame.length; i += 4) {
    x = mix32(x)
    const left = frame.length - i
    if (left >= 4) frame.writeUInt32BE(x, i)
    else for (let k = 0; k < left; k++) frame[i + k] = (x >>> (24 - 8 * k)) & 0xff
  }
  // UDP checksum over the IPv4 pseudo-header, header and payload.
  let pseudo = 0
  pseudo += (f.ipv4 >>> 16) + (f.ipv4 & 0xffff) + (PEER_IPV4 >>> 16) + (PEER_IPV4 & 0xffff) + 17 + udpLen
  const sum = onesComplementSum(frame, udp, frame.length, pseudo)
  const csum = ~sum & 0xffff
  frame.writeUInt16BE(csum === 0 ? 0xffff : csum, udp + 6)
  return frame
}

export interface ParsedFrame {
  srcMac: string
  dstMac: string
  srcIp: string
  dstIp: string
  srcPort: number
  dstPort: number
  step: number
  seq: number
  stateHash: number
}

const macString = (b: Buffer): string => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':')
const ipString = (v: number): string => [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join('.')

/** Parses and checks a frame the sim guest emitted (every length and both checksums); throws on anything wrong. */
/**
 * The guest step a simulated guest's frame carries (the step that sent it), or undefined for a
 * frame that is not one (the sim's extra for Remus/COLO on the sim host: netbuf and the proxy).
 */
export function frameGuestStep(frame: Buffer): number | undefined {
  try {
    return parseFrame(frame).step
  } catch {
    return undefined
  }
}

export function parseFrame(frame: Buffer): ParsedFrame {
  const fail = (why: string): never => {
    throw new Error(`bad sim frame: ${why}`)
  }
  if (frame.length < ETH_HEADER + IPV4_HEADER + UDP_HEADER + FRAME_PAYLOAD_MIN) fail(`only ${frame.length} bytes`)
  if (frame.readUInt16BE(12) !== 0x0800) fail('not IPv4')
  const ip = ETH_HEADER
  if (frame[ip] !== 0x45) fail('IPv4 version/IHL')
  if (frame.readUInt16BE(ip + 2) !== frame.length - ETH_HEADER) fail('IPv4 total length')
  if (frame[ip + 9] !== 17) fail('not UDP')
  if (onesComplementSum(frame, ip, ip + IPV4_HEADER) !== 0xffff) fail('IPv4 header checksum')
  const udp = ip + IPV4_HEADER
  const udpLen = frame.readUInt16BE(udp + 4)
  if (udpLen !== frame.length - udp) fail('UDP length')
  const src = frame.readUInt32BE(ip + 12)
  const dst = frame.readUInt32BE(ip + 16)
  const pseudo = (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + 17 + udpLen
  if (onesComplementSum(frame, udp, frame.length, pseudo) !== 0xffff) fail('UDP checksum')
  const p = udp + UDP_HEADER
  if (frame.toString('latin1', p, p + 4) !== 'XLTS') fail('payload magic')
  const u64 = (o: number): number => frame.readUInt32BE(o) * 4294967296 + frame.readUInt32BE(o + 4)
  return {
    dstMac: macString(frame.subarray(0, 6)),
    srcMac: macString(frame.subarray(6, 12)),
    srcIp: ipString(src),
    dstIp: ipString(dst),
    srcPort: frame.readUInt16BE(udp),
    dstPort: frame.readUInt16BE(udp + 2),
    step: u64(p + 8),
    seq: u64(p + 16),
    stateHash: frame.readUInt32BE(p + 24),
  }
}
