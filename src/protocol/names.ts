// Room and user ids: 1 to 128 characters of `A-Z a-z 0-9 _ . : -`, starting with a letter or
// digit. Dots may appear but never lead, so `..` and `.hidden` are refused while `v1.2` is not.
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;

export const NAME_RULE = "1-128 characters of A-Z a-z 0-9 _ . : - starting with a letter or digit";

export function isValidName(value: unknown): value is string {
  return typeof value === "string" && NAME.test(value);
}
