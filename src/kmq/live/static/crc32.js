// CRC-32 (ISO-HDLC: the CRC of zlib and PNG), the checksum of every record and chunk
// (docs/FORMAT.md section 1). Table-driven, one byte at a time.

const TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let bit = 0; bit < 8; bit++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/**
 * Continue a CRC-32 over `bytes[start..end)`; start with crc = 0.
 * @param {Uint8Array} bytes
 * @param {number} start
 * @param {number} end
 * @param {number} [crc=0] the CRC of the bytes before these
 * @returns {number} unsigned 32-bit CRC
 */
export function crc32(bytes, start = 0, end = bytes.length, crc = 0) {
  let c = ~crc >>> 0;
  for (let i = start; i < end; i++) c = TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}
