/** xl.cfg files, the disk and vif spec strings inside them, and the libxl domain config built from them. */
export {ConfigError, formatWarning, type ConfigErrorCode, type ConfigPos, type ConfigWarning} from './errors.js'
export {
  atomText,
  isXlName,
  isXlNumberText,
  mergeConfigs,
  parseCInteger,
  parseOverrides,
  parseXlConfig,
  type CIntegerResult,
  type ParseOptions,
  type ParsedConfig,
  type XlAtom,
  type XlList,
  type XlNumber,
  type XlOp,
  type XlSetting,
  type XlString,
  type XlValue,
} from './xl-cfg.js'
export {getAtomList, getBool, getInt, getList, getSetting, getString, getStringList, type IntBounds} from './access.js'
export {
  formatValue,
  formatXlConfig,
  quoteXlString,
  xlList,
  xlNumber,
  xlString,
  type FormatOptions,
  type XlValueInput,
} from './format.js'
export type {SpecOptions, SpecOrigin} from './spec-origin.js'
export {parseDiskSpec, type DiskBackend, type DiskFormat, type DiskSpec, type DiskSpecification} from './disk.js'
export {
  parseVifRate,
  parseVifSpec,
  VIF_COLO_KEYS,
  VIF_KEYS,
  type NicType,
  type VifColoKey,
  type VifOptions,
  type VifParseResult,
  type VifRate,
  type VifSpec,
} from './vif.js'
export {
  diskToJson,
  nicToJson,
  toDomainConfig,
  type DomainConfig,
  type DomainConfigOptions,
  type DomainType,
  type LibxlDefbool,
  type LibxlDiskJson,
  type LibxlNicJson,
  type ShutdownAction,
  type SimSettings,
} from './domain.js'
export {domainConfigFromJson, domainSpec, simWorkload} from './domain-spec.js'
