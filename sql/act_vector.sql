-- act_vector(act, act_bf16): an activation row's vector as FLOAT[], whichever column holds it.
-- Rows stored as bfloat16 keep the bit patterns (uint16) in act_bf16; a bfloat16 is the top half of a float32:
-- sign bit, 8 exponent bits (bias 127), 7 mantissa bits. Example:
--   SELECT act_vector(act, act_bf16) FROM activations WHERE example_id = 0 ORDER BY position;
CREATE OR REPLACE MACRO bf16_value(b) AS
    CAST(CASE
        WHEN ((b >> 7) & 255) = 255 THEN
            CASE WHEN (b & 127) <> 0 THEN 'nan'::DOUBLE WHEN (b >> 15) = 1 THEN '-inf'::DOUBLE ELSE 'inf'::DOUBLE END
        ELSE (CASE WHEN (b >> 15) = 1 THEN -1.0 ELSE 1.0 END)
             * (CASE WHEN ((b >> 7) & 255) = 0 THEN (b & 127) / 128.0 * pow(2.0, -126)
                     ELSE (1.0 + (b & 127) / 128.0) * pow(2.0, ((b >> 7) & 255) - 127) END)
    END AS FLOAT);
CREATE OR REPLACE MACRO act_vector(act, act_bf16) AS
    coalesce(act, list_transform(act_bf16, lambda b: bf16_value(CAST(b AS INTEGER))));
