/**
 * Malformed configs, each with the exact error an operator sees: a ConfigError (never another
 * exception) whose message starts with `file:line:column:` pointing at the character at fault.
 * Columns count from 1. Each row goes through the whole path `xl-ts create` takes: parse the file,
 * apply command-line overrides, build the domain config.
 */
import fc from 'fast-check'
import {describe, expect, it} from 'vitest'
import {
  ConfigError,
  parseDiskSpec,
  parseVifSpec,
  parseXlConfig,
  toDomainConfig,
  type ConfigErrorCode,
} from '../src/toolstack/config/index.js'

interface Case {
  name: string
  text: string
  overrides?: string[]
  code: ConfigErrorCode
  message: string
}

const HEAD = 'name = "vm1"\n'

const cases: Case[] = [
  // ---- lexical and syntax errors
  {
    name: 'unterminated string',
    text: 'name = "guest\nmemory = 512\n',
    code: 'unterminated',
    message: 'vm.cfg:1:8: unterminated string: no closing " on this line (a string cannot span lines)',
  },
  {
    name: 'backslash at the end of a string line',
    text: "extra = 'console=hvc0 \\\n  quiet'\n",
    code: 'unterminated',
    message: 'vm.cfg:1:9: unterminated string: a backslash at the end of the line does not continue it',
  },
  {
    name: "missing '='",
    text: 'name "guest"\n',
    code: 'syntax',
    message: "vm.cfg:1:6: expected '=' after the setting name 'name', found a string",
  },
  {
    name: "'=' without a name",
    text: HEAD + '= 512\n',
    code: 'syntax',
    message: "vm.cfg:2:1: expected a setting name before '='",
  },
  {
    name: "missing value after '='",
    text: HEAD + 'memory =\n',
    code: 'syntax',
    message: "vm.cfg:2:9: expected a value after '='",
  },
  {
    name: "value on the line after '='",
    text: HEAD + 'memory = # MiB\n  512\n',
    code: 'syntax',
    message: "vm.cfg:2:10: expected a value after '='",
  },
  {
    name: 'unquoted text value',
    text: 'type = hvm\n' + HEAD,
    code: 'syntax',
    message: "vm.cfg:1:8: expected a value after '=': 'hvm' is not quoted (text values need quotes)",
  },
  {
    name: "unbalanced '[' at the end of the file",
    text: HEAD + "disk = [ 'a',\n  'b'\n",
    code: 'unterminated',
    message: "vm.cfg:2:8: unterminated list: this '[' has no matching ']'",
  },
  {
    name: "unbalanced '[' followed by another setting",
    text: "vif = [ 'bridge=xenbr0'\nmemory = 512\n",
    code: 'syntax',
    message: "vm.cfg:2:1: expected ',' or ']' after a list element, found the word 'memory' (the '[' at line 1 column 7 is not closed)",
  },
  {
    name: "stray ']'",
    text: HEAD + 'memory = 512 ]\n',
    code: 'syntax',
    message: "vm.cfg:2:14: junk after the value of 'memory': found ']'; end a setting with a newline or ';'",
  },
  {
    name: 'junk after a value',
    text: HEAD + 'memory = 512 1024\n',
    code: 'syntax',
    message: "vm.cfg:2:14: junk after the value of 'memory': found the number 1024; end a setting with a newline or ';'",
  },
  {
    name: 'two settings on one line without ;',
    text: 'name = "a" memory = 1\n',
    code: 'syntax',
    message: "vm.cfg:1:12: junk after the value of 'name': found the word 'memory'; end a setting with a newline or ';'",
  },
  {
    name: 'empty list element',
    text: HEAD + "disk = [ , 'a' ]\n",
    code: 'syntax',
    message: "vm.cfg:2:10: expected a list element or ']' after '[', found ','",
  },
  {
    name: 'double comma in a list',
    text: HEAD + "disk = [ 'a',, 'b' ]\n",
    code: 'syntax',
    message: "vm.cfg:2:14: expected a list element or ']' after ',', found ','",
  },
  {
    name: 'number with a unit',
    text: HEAD + 'memory = 1024M\n',
    code: 'bad-number',
    message:
      "vm.cfg:2:10: bad number '1024M': numbers are integers, decimal, octal with a leading 0 or hex with 0x and lowercase digits; other values need quotes",
  },
  {
    name: 'hex number with uppercase digits',
    text: HEAD + 'sim_seed = 0xBEEF\n',
    code: 'bad-number',
    message:
      "vm.cfg:2:12: bad number '0xBEEF': numbers are integers, decimal, octal with a leading 0 or hex with 0x and lowercase digits; other values need quotes",
  },
  {
    name: 'fractional number',
    text: HEAD + 'sim_nondeterminism = 0.5\n',
    code: 'bad-number',
    message:
      "vm.cfg:2:22: bad number '0.5': numbers are integers, decimal, octal with a leading 0 or hex with 0x and lowercase digits; other values need quotes",
  },
  {
    name: 'negative number',
    text: HEAD + 'vcpus = -1\n',
    code: 'lexical',
    message: "vm.cfg:2:9: unexpected character '-': numbers cannot be negative, names cannot contain '-', and text values need quotes",
  },
  {
    name: 'uppercase setting name',
    text: HEAD + 'Memory = 512\n',
    code: 'lexical',
    message: "vm.cfg:2:1: unexpected character 'M': setting names are lowercase, and text values need quotes",
  },
  {
    name: 'Python syntax',
    text: HEAD + 'memory = int(512)\n',
    code: 'syntax',
    message: "vm.cfg:2:10: expected a value after '=': 'int' is not quoted (text values need quotes)",
  },
  {
    name: 'DOS line endings',
    text: 'name = "vm1"\r\nmemory = 512\r\n',
    code: 'lexical',
    message: "vm.cfg:1:13: unexpected character '\\r': xl.cfg needs Unix line endings (LF, not CR LF)",
  },
  {
    name: 'comment on the last line without a newline',
    text: HEAD + 'memory = 512\n# end of file',
    code: 'lexical',
    message: 'vm.cfg:3:1: a comment on the last line needs a newline after it (xl rejects the file otherwise)',
  },
  {
    name: 'unknown escape',
    text: 'name = "vm\\q1"\n',
    code: 'bad-escape',
    message: `vm.cfg:1:11: invalid escape '\\q' in a string (xl accepts \\\\ \\" \\' \\a \\b \\f \\n \\r \\t \\v)`,
  },
  {
    name: 'hex escape',
    text: 'name = "vm\\x31"\n',
    code: 'bad-escape',
    message: "vm.cfg:1:11: '\\x' escape in a string: xl rejects every hex escape",
  },
  {
    name: 'short octal escape',
    text: 'name = "vm\\1"\n',
    code: 'bad-escape',
    message: "vm.cfg:1:11: bad octal escape '\\1': xl needs two more digits after a backslash and a digit 0-7",
  },
  {
    name: "'+=' of a list to a string",
    text: HEAD + 'extra = "quiet"\nextra += [ "splash" ]\n',
    code: 'bad-append',
    message: "vm.cfg:3:10: '+=' cannot add a list to 'extra', which is a single value (set at vm.cfg:2:1)",
  },
  // ---- settings of the wrong type or value
  {
    name: 'missing name',
    text: 'memory = 512\nvcpus = 2\n',
    code: 'missing',
    message: 'vm.cfg: Domain name must be specified.',
  },
  {
    name: 'list where a number is needed',
    text: HEAD + 'memory = [ 512 ]\n',
    code: 'wrong-type',
    message: "vm.cfg:2:10: 'memory' is a list but should be a single value",
  },
  {
    name: 'quoted non-number where a number is needed',
    text: HEAD + 'memory = "512MB"\n',
    code: 'bad-number',
    message: `vm.cfg:2:10: 'memory' = "512MB" is not a number (decimal, octal with a leading 0, or hex with 0x)`,
  },
  {
    name: 'number token that is not an integer',
    text: HEAD + 'vcpus = 08\n',
    code: 'bad-number',
    message: `vm.cfg:2:9: 'vcpus' = "08" is not a number (decimal, octal with a leading 0, or hex with 0x)`,
  },
  {
    name: "'+=' on a number",
    text: HEAD + 'memory = 512\nmemory += 512\n',
    code: 'bad-number',
    message: "vm.cfg:3:11: '+=' cannot be used with 'memory', which is a number",
  },
  {
    name: 'unknown domain type',
    text: HEAD + 'type = "xen"\n',
    code: 'bad-value',
    message: "vm.cfg:2:8: Invalid domain type 'xen' (expected hvm, pv or pvh)",
  },
  {
    name: 'builder contradicting type',
    text: HEAD + 'type = "pvh"\nbuilder = "hvm"\n',
    code: 'bad-value',
    message: 'vm.cfg:3:11: Contradicting "builder" and "type" options specified.',
  },
  {
    name: 'maxvcpus below vcpus',
    text: HEAD + 'vcpus = 4\nmaxvcpus = 2\n',
    code: 'out-of-range',
    message: 'vm.cfg:3:12: maxvcpus (2) is less than vcpus (4)',
  },
  {
    name: 'malformed uuid',
    text: HEAD + 'uuid = "5f2c8a5e-3b7d-4c1e-9a6f"\n',
    code: 'bad-value',
    message: "vm.cfg:2:8: Failed to parse UUID: '5f2c8a5e-3b7d-4c1e-9a6f'",
  },
  {
    name: 'unknown shutdown action',
    text: HEAD + 'on_crash = "reboot"\n',
    code: 'bad-value',
    message:
      "vm.cfg:2:12: Unknown on_crash action 'reboot' specified (expected destroy, restart, rename-restart, preserve, coredump-destroy, coredump-restart, soft-reset)",
  },
  {
    name: 'bad override on the command line',
    text: HEAD,
    overrides: ['vcpus=2', 'memory='],
    code: 'syntax',
    message: "command line:2:8: expected a value after '='",
  },
  // ---- disk specs: the column is the offending token's, inside the quoted string
  {
    name: 'disk spec with an unknown key',
    text: HEAD + "disk = [ 'vdev=xvda,speed=fast,target=/img' ]\n",
    code: 'disk-spec',
    message: "vm.cfg:2:21: unknown parameter 'speed=fast' in disk spec 'vdev=xvda,speed=fast,target=/img'",
  },
  {
    name: 'colo-port that is not a number',
    text: HEAD + "disk = [ 'format=raw,vdev=hda,colo,colo-host=10.0.0.2,colo-port=nbd,target=/img' ]\n",
    code: 'disk-spec',
    message:
      "vm.cfg:2:65: unknown value for colo_port: 'nbd' (expected a port number, 1-65535) in disk spec 'format=raw,vdev=hda,colo,colo-host=10.0.0.2,colo-port=nbd,target=/img'",
  },
  {
    name: 'target= not last',
    text: HEAD + "disk = [ '/dev/vg/a,raw,xvda', 'target=/img,vdev=xvdb,access=ro' ]\n",
    code: 'disk-spec',
    message:
      "vm.cfg:2:45: target= must be the last parameter: it takes the rest of the spec, so 'vdev=xvdb' would become part of the target in disk spec 'target=/img,vdev=xvdb,access=ro'",
  },
  {
    name: 'disk without vdev',
    text: HEAD + "disk = [ '/img,raw' ]\n",
    code: 'disk-spec',
    message: "vm.cfg:2:11: no vdev specified in disk spec '/img,raw'",
  },
  {
    name: 'disk with an unknown format',
    text: HEAD + "disk = [ '/img,vmdk,xvda,rw' ]\n",
    code: 'disk-spec',
    message: "vm.cfg:2:16: unknown value for format: 'vmdk' in disk spec '/img,vmdk,xvda,rw'",
  },
  {
    name: 'disk with too many positional parameters, after an escape',
    text: HEAD + "disk = [ 'it\\'s.img,raw,xvda,rw,x' ]\n",
    code: 'disk-spec',
    message: `vm.cfg:2:33: too many positional parameters: 'x' in disk spec 'it\\'s.img,raw,xvda,rw,x'`,
  },
  {
    name: 'disk with an unknown deprecated prefix',
    text: HEAD + "disk = [ 'vmware:/img,xvda,w' ]\n",
    code: 'disk-spec',
    message: "vm.cfg:2:11: unknown deprecated disk prefix 'vmware:' in disk spec 'vmware:/img,xvda,w'",
  },
  {
    name: 'disk list holding a list',
    text: HEAD + "disk = [ [ '/img,raw,xvda' ] ]\n",
    code: 'wrong-type',
    message: "vm.cfg:2:10: element 0 of 'disk' is a list but should be a single value",
  },
  // ---- vif specs
  {
    name: 'vif with a malformed mac',
    text: HEAD + "vif = [ 'bridge=xenbr0,mac=00:16:3e:zz:00:01' ]\n",
    code: 'vif-spec',
    message:
      "vm.cfg:2:28: invalid value for mac: '00:16:3e:zz:00:01' (expected six hex bytes like 00:16:3e:74:3d:76) in vif spec 'bridge=xenbr0,mac=00:16:3e:zz:00:01'",
  },
  {
    name: 'vif with a non-numeric mtu',
    text: HEAD + "vif = [ '', 'bridge=xenbr1, mtu=jumbo' ]\n",
    code: 'vif-spec',
    message: "vm.cfg:2:33: invalid value for mtu: 'jumbo' (expected a decimal number) in vif spec 'bridge=xenbr1, mtu=jumbo'",
  },
  {
    name: 'vif with an unknown type',
    text: HEAD + "vif = [ 'type=tap' ]\n",
    code: 'vif-spec',
    message: "vm.cfg:2:15: invalid value for type: 'tap' (expected vif or ioemu) in vif spec 'type=tap'",
  },
  {
    name: 'vif with a malformed rate',
    text: HEAD + "vif = [ 'rate=10Mbit/s' ]\n",
    code: 'vif-spec',
    message: "vm.cfg:2:15: invalid rate: '10Mbit/s' in vif spec 'rate=10Mbit/s'",
  },
]

describe('malformed configs', () => {
  it.each(cases)('$name', c => {
    let err: unknown
    try {
      toDomainConfig(parseXlConfig(c.text, {file: 'vm.cfg'}), c.overrides ?? [], {uuid: () => '00000000-0000-0000-0000-000000000000'})
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(ConfigError)
    const e = err as ConfigError
    expect(e.message).toBe(c.message)
    expect(e.code).toBe(c.code)
    expect(`${e.file}${e.line > 0 ? `:${e.line}:${e.column}` : ''}: ${e.detail}`).toBe(c.message)
  })

  it('has at least 20 rows', () => {
    expect(cases.length).toBeGreaterThanOrEqual(20)
  })
})

describe('no input escapes as anything but a ConfigError', () => {
  const onlyConfigErrors = (f: () => unknown): boolean => {
    try {
      f()
      return true
    } catch (e) {
      return e instanceof ConfigError
    }
  }
  const piece = fc.constantFrom(
    'name', ' = ', '+=', '"s"', "'t'", '1', '0x1f', '[', ']', ',', ';', '\n', '#c\n', '\\', '"', 'A', '-', '\r', '\t', '08',
  )
  const soup = fc.oneof(fc.string(), fc.array(piece, {maxLength: 20}).map(a => a.join('')))

  it('parseXlConfig + toDomainConfig', () => {
    fc.assert(fc.property(soup, text => onlyConfigErrors(() => toDomainConfig(parseXlConfig(text)))), {numRuns: 2000})
  })

  it('parseDiskSpec and parseVifSpec', () => {
    const spec = fc.oneof(
      fc.string(),
      fc.array(fc.constantFrom('phy:', 'target=', 'vdev=', 'colo', 'colo-port=', '/x', ',', ':', '=', ' ', 'raw', 'mac=', 'rate=', '@'), {
        maxLength: 12,
      }).map(a => a.join('')),
    )
    fc.assert(
      fc.property(spec, s => onlyConfigErrors(() => parseDiskSpec(s)) && onlyConfigErrors(() => parseVifSpec(s))),
      {numRuns: 2000},
    )
  })
})
