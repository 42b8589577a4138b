/** Malformed tensor data: a mask, a value part or a shape that cannot be what it claims. The message says what and where. */
export class CodecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CodecError';
  }
}
