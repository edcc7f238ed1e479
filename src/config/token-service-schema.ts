/**
 * Configuration of the token service (authorization server) and its store.
 * Owned by the token-service work; the top-level schema imports it.
 */
import { z } from 'zod';

export const tokenServiceSchema = z.strictObject({}).meta({ description: 'The token service (authorization server).' });

export const storeSchema = z
  .strictObject({})
  .meta({ description: 'Where Tessera keeps clients, keys, grants, revocations and audit events.' });
